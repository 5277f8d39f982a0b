//! Tests that hold the code's shape in place (no runtime code): decisions stay pure.

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Every `decide.rs` under src/ (one folder deep).
    fn decide_files() -> Vec<(String, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&src).expect("src/").flatten() {
            let file = entry.path().join("decide.rs");
            if let Ok(text) = std::fs::read_to_string(&file) {
                found.push((file.display().to_string(), text));
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
}
