//! Tests that hold the code's shape in place (no runtime code): every controller has the same
//! files, decisions stay pure, and modules import each other without cycles.

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `decide.rs` under src/ (one folder deep), and the files of its `decide/` folder.
    fn decide_files() -> Vec<(String, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&src).expect("src/").flatten() {
            let file = entry.path().join("decide.rs");
            if let Ok(text) = std::fs::read_to_string(&file) {
                found.push((file.display().to_string(), text));
            }
            let parts = std::fs::read_dir(entry.path().join("decide"))
                .into_iter()
                .flatten();
            for part in parts.flatten() {
                if let Ok(text) = std::fs::read_to_string(part.path()) {
                    found.push((part.path().display().to_string(), text));
                }
            }
        }
        found
    }

    #[test]
    fn no_decide_rs_touches_a_client_or_the_clock() {
        let files = decide_files();
        assert!(
            files.len() >= 4,
            "the controllers' decide.rs files: {files:?}"
        );
        for (file, text) in files {
            for forbidden in [
                "kube::Client",
                "Client,",
                "Api<",
                "Timestamp::now",
                "Instant::now",
                "SystemTime::now",
                ".await",
            ] {
                assert!(
                    !text.contains(forbidden),
                    "{file} uses {forbidden}: decisions are pure functions with injected time"
                );
            }
        }
    }

    const CONTROLLERS: [&str; 4] = ["backup", "restore", "schedule", "notify"];

    fn source(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        // Test modules may reach anywhere; only the code that ships counts.
        match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => text[..at].to_string(),
            None => text,
        }
    }

    /// (top-level module, its non-test source) for every file under src/.
    fn modules() -> Vec<(String, String)> {
        fn walk(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
            for entry in std::fs::read_dir(dir).expect("a source folder").flatten() {
                let path = entry.path();
                let name = path
                    .file_stem()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default()
                    .to_string();
                let module = top.map_or(name.clone(), str::to_string);
                if path.is_dir() {
                    walk(&path, Some(&module), out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    out.push((module, source(&path)));
                }
            }
        }
        let mut out = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            None,
            &mut out,
        );
        out
    }

    #[test]
    fn every_controller_has_the_same_files_with_the_same_roles() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for controller in CONTROLLERS {
            for file in [
                "controller.rs",
                "observe.rs",
                "decide.rs",
                "apply.rs",
                "error.rs",
            ] {
                let path = src.join(controller).join(file);
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    text.starts_with("//! "),
                    "{} is missing or does not start with a //! line",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn restore_and_backup_share_code_only_through_the_shared_homes() {
        for (module, text) in modules() {
            let other = match module.as_str() {
                "restore" => "crate::backup::",
                "backup" => "crate::restore::",
                _ => continue,
            };
            assert!(
                !text.contains(other),
                "{module} imports {other}: move the piece to a shared home"
            );
        }
    }

    #[test]
    fn no_module_imports_form_a_cycle() {
        use std::collections::{BTreeMap, BTreeSet};
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let all = modules();
        let names: BTreeSet<String> = all.iter().map(|(m, _)| m.clone()).collect();
        for (module, text) in &all {
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                let target: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if target != *module && names.contains(&target) {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        // Depth-first search for a back edge.
        fn visit(
            node: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|n| n == node) {
                let mut cycle = path[at..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in edges.get(node).into_iter().flatten() {
                if let Some(cycle) = visit(next, edges, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        for module in &names {
            if let Some(cycle) = visit(module, &edges, &mut Vec::new(), &mut done) {
                panic!(
                    "modules import each other in a cycle: {}",
                    cycle.join(" → ")
                );
            }
        }
    }

    #[test]
    fn the_readme_layout_table_names_every_module() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
        let table = readme
            .split("## Layout")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Layout section");
        for entry in std::fs::read_dir(root.join("src")).expect("src/").flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if ["lib.rs", "main.rs", "shape.rs"].contains(&name.as_str()) {
                continue;
            }
            let shown = if entry.path().is_dir() {
                format!("`src/{name}/")
            } else {
                format!("`src/{name}`")
            };
            assert!(
                table.contains(&shown),
                "README's layout table does not mention src/{name}"
            );
        }
    }
}
