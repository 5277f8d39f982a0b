//! Tenant isolation on the test bed, through real RBAC and the chart's admission policies:
//! a tenant of one account (the chart's rewind-editor role, admin in its own namespaces) tries
//! every way we know to read, change or destroy another account's backups; each is refused
//! with why and who may, and the other account's backups, schedules and snapshots are exactly
//! as before. The platform admin can still do everything; the operator still does its work.
//!
//! Every input the operator reads on the way, who can write it, and where that is proved:
//! - `ProjectRestore.spec.account` / `AccountBackup.spec.account`: the account's owners only
//!   (admission); the operator compares them — `a_tenant_cannot_restore_another_accounts_backup…`.
//! - import label and annotation, schedule label, slot annotation, BackupSchedule owner references:
//!   the operator only (admission); the operator also checks the repository's record and the
//!   schedule's uid and account — `…import…`, `…schedule_treat_her_backups…`, `…takes_a_slots_backup_name…`.
//! - `rewind.dev/requested-by`: stamped at admission — `the_requester_is_the_authenticated_user…`.
//! - a namespace's `rewind.dev/account`, `rewind.dev/busy` and restore markers: platform admins and
//!   the operator only — `…move_a_namespace…`.
//! - command annotations on pods and templates: whoever may exec there — `annotations_that_run_commands…`.
//! - restore targets, Pod Security labels, what a project holds: the project's own owners; they
//!   decide only about their own copy, which comes back no weaker and inert — `a_restored_project…`.
//! - `rewind.dev/hook-timeout`, notes: anyone who edits the pod or the backup; only shorten the
//!   operator's limit / are length-limited and printed harmlessly (unit tests in hooks.rs, render.rs).
//! - the stream of AccountBackup changes every controller shares: any tenant, by creating and
//!   deleting their own backups; it can never stall the watch for other accounts —
//!   `backup_e2e::backups_created_and_deleted_at_once_never_stall_the_controller`.
//! - a backup's status (its repository snapshot, record counts, phase): the operator only (the
//!   user roles may only read `…/status`); a restore reads a backup's records from the repository
//!   only for a restorable backup of its own account — unit
//!   `restore::decide::tests::a_restore_naming_another_accounts_backup_never_reads_its_records`.
//! - spec durations (`ttl`, `maxAge`, `expireAfter`): the account's owners; a bad one never fails
//!   reading the object (which would break the shared watch) — unit
//!   `duration::tests::a_spec_duration_keeps_its_text_and_a_bad_one_reads_without_failing`.
//! - objects in the bucket (locks, `config`): whoever has bucket write access, without the key;
//!   a forged lock is ignored, an edited chunker refused — `repository::a_forged_prune_lock_in_the_bucket_does_not_block_backups`,
//!   `repository::a_config_whose_chunker_sizes_were_edited_is_refused`.
//! - a dump stream that breaks while a restore reads it (a bucket writer, or a flaky S3): it is
//!   read again, at most four times, and only the restore's own backup's stream — it decides
//!   nothing about another account; a permanent error fails the item at once — unit
//!   `restore::decide::tests::a_dump_is_streamed_again_only_when_the_repository_failed_transiently`.
//! - a volume snapshot's `restoreSize`: the snapshot controller, copied into the backup's status by
//!   the operator; `kubectl rewind describe` only prints it, in its account's own backup — unit
//!   `cli::plugin::render::tests::a_volume_size_in_plain_bytes_reads_like_the_other_sizes_and_a_quantity_stays_as_written`.
//! - an account lock's holder (`<kind>/<name>/<uid>@<replica>`) and its renewals: Leases in the
//!   operator's own namespace, which no tenant role can write; the operation named is one of the
//!   account's own — `operator_e2e::two_replicas_without_leader_election_run_a_backup_once…`.
//!   A deleted backup's release waits only while that Lease names this very backup (its UID)
//!   on another replica that renews it; another account's lock is never read for it —
//!   `operator_e2e::a_backup_deleted_while_another_replica_copies_it_is_released_only_once_that_copy_ends`,
//!   unit `account_lock::tests::a_deleted_operation_is_still_copied_elsewhere_while_the_other_replica_renews_its_lock`.
//! - an imported snapshot's error (the CSI driver's, on the helper content; the snapshot
//!   controller's on the VolumeSnapshot): cluster components, on objects Rewind made for one
//!   restore; they fail only that restore's volume — unit
//!   `restore::volumes::tests::an_import_fails_only_when_the_driver_keeps_refusing_the_snapshot`.
//! - a volume's files and a restore target's contents (`rewind volume backup|restore`, run by
//!   mover pods in the operator's namespace): the project's pods, which may swap a directory for a symlink while the
//!   mover works; every entry is one name under a directory held open, never followed, a target
//!   that is not empty is refused — `volume_tree::a_symlink_swapped_into_a_middle_component_during_a_restore_is_never_followed`,
//!   unit `volume::walk::tests::…during_a_backup_is_never_followed`, `volume_tree::restoring_into_a_target_that_is_not_empty_is_refused…`.
//! - a mover's termination message (its JSON summary, or the end of its error output naming a
//!   file of the volume): written by the operator's own pod, about one volume of one operation;
//!   it lands in that operation's status only. Mover pods, staging PVCs and imported snapshots
//!   live in the operator's namespace (no tenant writes there) and are found by deterministic
//!   names; a filled PersistentVolume's `rewind.dev/filled-by` label is on a cluster-scoped
//!   object no tenant role may write. A restore fills a volume only from the repository copy its
//!   own (account-checked) backup records, and hands it to the claim in its own target —
//!   `volume_copy_e2e::a_backup_copies_its_volume_into_the_repository_and_a_restore_fills_it_from_there_once_the_snapshot_is_gone`.
//! - a database pod's name and its `rewind.dev/database`/`…-command` annotations, read by a
//!   database worker (issue 15): the project's owner, in the project's namespace. They choose
//!   only which pod of that namespace the worker execs into and the command run there: the
//!   worker's Role lives in that namespace and names that one pod (unit
//!   `mover::worker::tests::the_workers_role_allows_exec_into_its_one_database_pod_only`), the
//!   worker account holds nothing of its own (`chart_e2e::chart_installs_with_least_privilege_rbac_and_the_account_ownership_policy`),
//!   and the worker's pod, key and summary stay in the operator's namespace. A tenant who puts
//!   our labels on its own Roles, or pre-creates one under a worker's name, touches only its own
//!   namespace: the operator removes labelled Roles/RoleBindings only when the operation is their
//!   controller owner (`mover::apply::remove_worker_access`), and a Role can grant the worker no
//!   more than its author holds there. Which repository snapshot a dump is loaded from comes
//!   from the backup's own outcome record (operator-written, encrypted), never from a field a
//!   tenant writes — `volume_copy_e2e::a_database_is_dumped_and_loaded_by_worker_pods_that_leave_no_pod_or_access_behind`.
//! - what settling a backup's snapshots and removing a helper read (2026-12-01): a
//!   VolumeSnapshotContent's labels, `volumeSnapshotRef` and annotations — cluster-scoped,
//!   written only by the operator and the snapshot controller, never by a tenant — and whether a
//!   VolumeSnapshot under Rewind's deterministic name exists in the project's namespace, which
//!   the project's owner can write. The VolumeSnapshot deleted is chosen by the content's
//!   recorded UID, so a tenant's namesake is left alone; a namesake only makes Rewind treat its
//!   own content there as free to go, which holds just that account's snapshot (a pending one, or
//!   a helper of that account's restore), and every content is pinned to Retain as it goes, so
//!   its physical snapshot is never deleted on a tenant's word —
//!   `volumes_databases_e2e::settling_a_backup_releases_snapshots_the_snapshot_controller_left_stuck_or_still_bound_and_leaves_a_tenants_namesake_alone`.
//!   A snapshot an attempt left before labelling its content is found through the contents'
//!   `volumeSnapshotRef`, and taken over (labelled pending, Retain) and released only when its
//!   VolumeSnapshot is in one of the backup's own projects (namespaces carry the account label
//!   by the platform's hand), has the content's UID, and bears the name derived from the
//!   backup's UID and its source PVC: a tenant of
//!   another account who copies that name into her project is left alone, and one of the same
//!   account can at most have her own account's VolumeSnapshot deleted —
//!   `volumes_databases_e2e::deleting_a_backup_removes_the_snapshots_an_attempt_left_unlabelled_in_its_project_whatever_their_class_and_leaves_another_accounts_namesake_alone`.
//! - `make run`'s sample account and the chaos suite's account: written by the person running
//!   them, in their own namespaces (`demo-*`, `chaos-*`); they read nothing of other accounts.

mod support;

use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;
use support::operator::Operator;
use support::{Bed, TestNamespace, unique};

const DONE: Duration = Duration::from_secs(150);
const PLATFORM_ADMINS: &str = "rewind:platform-admins";

fn operator(bed: &Bed) -> &'static Operator {
    Operator::shared(bed, &[])
}

/// A person: a user name and the groups the API server authenticates them with.
#[derive(Clone)]
struct Person {
    name: String,
    groups: Vec<String>,
}

impl Person {
    /// Runs kubectl as this person (impersonation: real authentication, RBAC and admission).
    fn kubectl(&self, bed: &Bed, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--as", &self.name]);
        for group in &self.groups {
            full.extend(["--as-group", group]);
        }
        bed.kubectl_with_stdin(&full, stdin.map(str::as_bytes))
    }

    fn create(&self, bed: &Bed, yaml: &str) -> Result<String, String> {
        self.kubectl(bed, &["create", "-f", "-"], Some(yaml))
    }
}

/// Two accounts, an owner of each, and a platform admin, with the chart's user roles.
struct Tenancy<'a> {
    bed: &'a Bed,
    victim: String,
    attacker: String,
    alice: Person,
    mallory: Person,
    admin: Person,
    bindings: Vec<String>,
}

/// The chart's user ClusterRoles under names of this suite's own (`tenancy-rewind-*`), so a
/// `helm install` of the chart on the same bed never finds them in its way.
fn user_roles(bed: &Bed) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let rendered = bed.render_chart("rewind", "rewind-system", &["templates/rbac-users.yaml"]);
        bed.kubectl_with_stdin(
            &["apply", "-f", "-"],
            Some(
                rendered
                    .replace("name: rewind-", "name: tenancy-rewind-")
                    .as_bytes(),
            ),
        )
        .expect("apply the user roles");
    });
}

impl<'a> Tenancy<'a> {
    fn new(bed: &'a Bed) -> Self {
        operator(bed);
        user_roles(bed);
        let victim = unique("victim");
        let attacker = unique("mallory");
        let alice = Person {
            name: unique("alice"),
            groups: vec![format!("rewind:owners:{victim}")],
        };
        let mallory = Person {
            name: unique("mallory"),
            groups: vec![format!("rewind:owners:{attacker}")],
        };
        let admin = Person {
            name: unique("platform"),
            groups: vec![PLATFORM_ADMINS.to_string()],
        };
        let mut tenancy = Tenancy {
            bed,
            victim,
            attacker,
            alice,
            mallory,
            admin,
            bindings: Vec::new(),
        };
        for (person, role) in [
            (tenancy.alice.clone(), "tenancy-rewind-editor"),
            (tenancy.mallory.clone(), "tenancy-rewind-editor"),
            (tenancy.admin.clone(), "cluster-admin"),
        ] {
            tenancy.cluster_binding(&person, role);
        }
        tenancy.wait_for_policies();
        tenancy
    }

    fn cluster_binding(&mut self, person: &Person, role: &str) {
        let name = unique("tenancy");
        self.bed.kubectl_ok(&[
            "create",
            "clusterrolebinding",
            &name,
            &format!("--clusterrole={role}"),
            &format!("--user={}", person.name),
        ]);
        self.bindings.push(name);
    }

    /// Policies take effect a moment after they are applied: wait until mallory's backup of
    /// the victim's account is refused (a server-side dry run, so nothing is created).
    fn wait_for_policies(&self) {
        let yaml = backup_yaml(&unique("probe"), &self.victim, "");
        self.bed.wait_until(
            "the account-ownership policy to be in force",
            Duration::from_secs(60),
            || {
                self.mallory
                    .kubectl(
                        self.bed,
                        &["create", "--dry-run=server", "-f", "-"],
                        Some(&yaml),
                    )
                    .err()
                    .filter(|e| e.contains("rewind:owners:"))
            },
            String::new,
        );
    }

    /// A project of `account`, created by the admin, where `owner` is a namespace admin.
    fn project(&self, account: &str, owner: &Person) -> TestNamespace<'a> {
        let project = self.bed.project("proj", account);
        self.bed.kubectl_ok(&[
            "-n",
            &project.name,
            "create",
            "rolebinding",
            "owner-is-admin",
            "--clusterrole=admin",
            &format!("--user={}", owner.name),
        ]);
        self.bed.apply(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {}}}\ndata: {{plan: gold}}\n",
            project.name
        ));
        project
    }

    /// A completed backup of `account`, created by `person`.
    fn completed_backup(&self, person: &Person, account: &str) -> (String, Value) {
        let name = unique("ab");
        person
            .create(self.bed, &backup_yaml(&name, account, ""))
            .unwrap_or_else(|e| panic!("{} may back up {account}: {e}", person.name));
        let status = wait_phase(self.bed, "accountbackup", &name, &["Completed"]);
        (name, status)
    }
}

impl Drop for Tenancy<'_> {
    fn drop(&mut self) {
        for binding in &self.bindings {
            let _ = self.bed.kubectl(&[
                "delete",
                "clusterrolebinding",
                binding,
                "--ignore-not-found",
            ]);
        }
    }
}

fn backup_yaml(name: &str, account: &str, metadata_extra: &str) -> String {
    format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: AccountBackup\nmetadata:\n  name: {name}\n{metadata_extra}spec: {{account: {account}}}\n"
    )
}

fn restore_yaml(name: &str, account: &str, backup: &str, targets: &str) -> String {
    format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: ProjectRestore\nmetadata: {{name: {name}}}\nspec:\n  account: {account}\n  backup: {backup}\n  targetNamespaces: {targets}\n"
    )
}

fn object(bed: &Bed, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend(["-o", "json"]);
    bed.kubectl(&full)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

fn wait_phase(bed: &Bed, kind: &str, name: &str, phases: &[&str]) -> Value {
    bed.wait_until(
        &format!("{kind} {name} to reach {phases:?}"),
        DONE,
        || {
            let status = object(bed, &[kind, name])["status"].clone();
            phases
                .contains(&status["phase"].as_str().unwrap_or_default())
                .then_some(status)
        },
        || {
            format!(
                "{}\n--- operator log ---\n{}",
                object(bed, &[kind, name]),
                operator(bed).log_tail()
            )
        },
    )
}

fn refused(result: Result<String, String>, what: &str, says: &[&str]) {
    match result {
        Ok(out) => panic!("{what} was allowed: {out}"),
        Err(err) => {
            for words in says {
                assert!(
                    err.contains(words),
                    "{what}: the refusal should say {words:?}: {err}"
                );
            }
        }
    }
}

fn namespace_exists(bed: &Bed, name: &str) -> bool {
    bed.kubectl(&["get", "namespace", name]).is_ok()
}

#[test]
fn a_tenant_cannot_restore_another_accounts_backup_but_the_platform_admin_can() {
    let bed = Bed::get();
    let t = Tenancy::new(&bed);
    let project = t.project(&t.victim, &t.alice);
    let (backup, before) = t.completed_backup(&t.alice, &t.victim);

    let stolen = unique("steal");
    refused(
        t.mallory.create(
            &bed,
            &restore_yaml(
                &unique("pr"),
                &t.victim,
                &backup,
                &format!("{{{}: {stolen}}}", project.name),
            ),
        ),
        "mallory restoring in the victim's name",
        &[&format!("rewind:owners:{}", t.victim), "platform admins"],
    );

    // Naming her own account gets past admission; the operator compares the backup's account.
    let restore = unique("pr");
    t.mallory
        .create(
            &bed,
            &restore_yaml(
                &restore,
                &t.attacker,
                &backup,
                &format!("{{{}: {stolen}}}", project.name),
            ),
        )
        .expect("a restore in her own account's name is admitted");
    let status = wait_phase(&bed, "projectrestore", &restore, &["Failed"]);
    let conditions = status["conditions"].to_string();
    assert!(conditions.contains("AccountMismatch"), "{status}");
    assert!(
        !namespace_exists(&bed, &stolen),
        "no namespace was created for mallory"
    );
    assert_eq!(
        object(&bed, &["accountbackup", &backup])["status"],
        before,
        "the victim's backup is exactly as before"
    );

    // The platform admin restores any account's backup.
    let copy = unique("copy");
    let admin_restore = unique("pr");
    t.admin
        .create(
            &bed,
            &restore_yaml(
                &admin_restore,
                &t.victim,
                &backup,
                &format!("{{{}: {copy}}}", project.name),
            ),
        )
        .expect("the platform admin may restore the victim's backup");
    wait_phase(&bed, "projectrestore", &admin_restore, &["Completed"]);
    assert_eq!(
        bed.jsonpath(&["-n", &copy, "configmap", "settings"], "{.data.plan}")
            .as_deref(),
        Some("gold")
    );
    let _ = bed.kubectl(&["delete", "namespace", &copy, "--wait=false"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_import_another_accounts_snapshot_nor_make_the_operator_release_it() {
    let bed = Bed::get();
    let t = Tenancy::new(&bed);
    let project = t.project(&t.victim, &t.alice);
    // A volume, so the victim's backup owns a physical snapshot as well.
    bed.apply(&format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: {}}}\nspec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: 1Mi}}}}}}\n",
        project.name
    ));
    bed.wait_for_phase(&project.name, "pvc", "data", "Bound", DONE);
    let (backup, before) = t.completed_backup(&t.alice, &t.victim);
    let snapshot = before["repositorySnapshot"]
        .as_str()
        .expect("a snapshot id")
        .to_string();
    let handle = before["volumeSnapshots"][0]["snapshotHandle"]
        .as_str()
        .expect("a physical snapshot")
        .to_string();
    // Contents naming the victim's physical snapshot (a temporary one made to delete it, or a
    // helper made to restore from it); the suite's other tests take and drop their own meanwhile.
    let physical = |bed: &Bed| {
        bed.kubectl_ok(&[
            "get",
            "volumesnapshotcontents",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.spec.source.snapshotHandle} {.status.snapshotHandle}{\"\\n\"}{end}",
        ])
        .lines()
        .filter(|line| line.split(' ').skip(1).any(|h| h == handle))
        .map(String::from)
        .collect::<Vec<_>>()
    };
    let contents_before = physical(&bed);

    refused(
        t.mallory.create(
            &bed,
            &backup_yaml(
                &unique("ab"),
                &t.attacker,
                &format!("  annotations: {{rewind.dev/imported-from-snapshot: \"{snapshot}\"}}\n"),
            ),
        ),
        "mallory importing the victim's snapshot",
        &["written only by the operator"],
    );
    refused(
        t.mallory.create(
            &bed,
            &backup_yaml(
                &unique("ab"),
                &t.attacker,
                "  labels: {rewind.dev/imported: \"true\"}\n",
            ),
        ),
        "mallory marking a backup imported",
        &["written only by the operator"],
    );

    // Even without the policy (here: an admin writes what a tenant could on a cluster that
    // has none), the operator imports only what its repository records under that name and account.
    let forged = unique("ab");
    t.admin
        .create(
            &bed,
            &backup_yaml(
                &forged,
                &t.attacker,
                &format!("  annotations: {{rewind.dev/imported-from-snapshot: \"{snapshot}\"}}\n"),
            ),
        )
        .expect("an admin may write the annotation");
    let status = wait_phase(&bed, "accountbackup", &forged, &["Failed"]);
    assert!(
        status["conditions"].to_string().contains("ImportRefused"),
        "{status}"
    );
    assert!(status["repositorySnapshot"].is_null(), "{status}");
    bed.kubectl_ok(&[
        "delete",
        "accountbackup",
        &forged,
        "--wait=true",
        "--timeout=60s",
    ]);

    let ids: Vec<String> = operator(&bed)
        .repository()
        .await
        .list_snapshots()
        .await
        .expect("list snapshots")
        .into_iter()
        .map(|manifest| manifest.id)
        .collect();
    assert!(
        ids.contains(&snapshot),
        "the victim's snapshot is still in the repository: {ids:?}"
    );
    assert_eq!(object(&bed, &["accountbackup", &backup])["status"], before);
    // The victim's physical snapshot is still there, and still the one its backup records.
    if let Some(state) = bed.var("CSI_STATE_DIR") {
        let tarball = std::path::Path::new(state)
            .join("snapshots")
            .join(format!("{handle}.tgz"));
        assert!(
            tarball.exists(),
            "the physical snapshot {handle} is still on the CSI driver"
        );
    }
    assert_eq!(
        physical(&bed),
        contents_before,
        "no content of the victim's snapshot came or went"
    );
}

#[test]
fn a_tenant_cannot_make_another_accounts_schedule_treat_her_backups_as_its_slots() {
    let bed = Bed::get();
    let mut t = Tenancy::new(&bed);
    let schedule = unique("daily");
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {schedule}}}\nspec: {{account: {}, schedule: \"0 3 * * *\", retention: {{keepLast: 1}}}}\n",
        t.victim
    ));
    let schedule_status = |bed: &Bed| {
        bed.wait_until(
            "the schedule's next slot",
            DONE,
            || {
                object(bed, &["backupschedule", &schedule])["status"]["nextScheduleTime"]
                    .as_str()
                    .map(str::to_string)
            },
            String::new,
        )
    };
    let next_before = schedule_status(&bed);
    let uid = bed
        .jsonpath(&["backupschedule", &schedule], "{.metadata.uid}")
        .expect("the schedule's uid");
    let owner = format!(
        "  ownerReferences: [{{apiVersion: rewind.dev/v1alpha1, kind: BackupSchedule, name: {schedule}, uid: {uid}, controller: true}}]\n"
    );
    let labelled = format!("  labels: {{rewind.dev/schedule: {schedule}}}\n");
    let slotted = "  annotations: {rewind.dev/slot: \"2099-01-01T03:00:00Z\"}\n".to_string();
    for (what, extra) in [
        ("the schedule label", labelled.clone()),
        ("a slot annotation", slotted.clone()),
        ("an owner reference to the victim's schedule", owner.clone()),
    ] {
        refused(
            t.mallory
                .create(&bed, &backup_yaml(&unique("ab"), &t.attacker, &extra)),
            &format!("mallory's backup with {what}"),
            &["written only by the operator"],
        );
    }
    refused(
        t.mallory
            .kubectl(&bed, &["delete", "backupschedule", &schedule], None),
        "mallory deleting the victim's schedule",
        &["forbidden"],
    );

    // Even with the full rewind-admin role she can neither move the schedule into her account
    // (then delete it, and with it the victim's backups) nor delete it.
    let mallory = t.mallory.clone();
    t.cluster_binding(&mallory, "tenancy-rewind-admin");
    let moved = bed.wait_until(
        "RBAC to let mallory patch schedules",
        Duration::from_secs(30),
        || {
            let result = t.mallory.kubectl(
                &bed,
                &[
                    "patch",
                    "backupschedule",
                    &schedule,
                    "--type=merge",
                    "-p",
                    &format!(r#"{{"spec":{{"account":"{}"}}}}"#, t.attacker),
                ],
                None,
            );
            (!matches!(&result, Err(e) if e.contains("cannot patch"))).then_some(result)
        },
        String::new,
    );
    refused(
        moved,
        "mallory moving the victim's schedule into her account",
        &["account"],
    );
    refused(
        t.mallory
            .kubectl(&bed, &["delete", "backupschedule", &schedule], None),
        "mallory (rewind-admin) deleting the victim's schedule",
        &[&format!("rewind:owners:{}", t.victim)],
    );
    assert_eq!(
        bed.jsonpath(&["backupschedule", &schedule], "{.spec.account}")
            .as_deref(),
        Some(t.victim.as_str())
    );

    // Without the policy the schedule still ignores her backup: it is not in its account.
    let forged = unique("ab");
    t.admin
        .create(
            &bed,
            &backup_yaml(&forged, &t.attacker, &format!("{labelled}{slotted}{owner}")),
        )
        .expect("an admin may write the markers");
    bed.kubectl_ok(&[
        "annotate",
        "backupschedule",
        &schedule,
        &format!("e2e/poke={forged}"),
    ]);
    std::thread::sleep(Duration::from_secs(5));
    let next_after = schedule_status(&bed);
    assert_eq!(
        next_before, next_after,
        "the forged 2099 slot moved the victim's schedule"
    );
    let status = object(&bed, &["backupschedule", &schedule])["status"].clone();
    assert!(
        status["lastScheduleTime"].is_null(),
        "the victim's schedule took the forged backup's 2099 slot as its own: {status}"
    );
    assert!(
        bed.kubectl(&["get", "accountbackup", &forged]).is_ok(),
        "the victim's schedule pruned the forged backup as its own"
    );
    bed.kubectl_ok(&["delete", "accountbackup", &forged, "--wait=false"]);
    bed.kubectl_ok(&["delete", "backupschedule", &schedule, "--wait=false"]);
}

#[test]
fn the_requester_is_the_authenticated_user_and_cannot_be_renamed() {
    let bed = Bed::get();
    let mut t = Tenancy::new(&bed);
    let _project = t.project(&t.victim, &t.alice);
    let name = unique("ab");
    t.alice
        .create(
            &bed,
            &backup_yaml(
                &name,
                &t.victim,
                "  annotations: {rewind.dev/requested-by: the-ceo}\n",
            ),
        )
        .expect("alice backs up her account");
    assert_eq!(
        bed.jsonpath(
            &["accountbackup", &name],
            "{.metadata.annotations.rewind\\.dev/requested-by}"
        )
        .as_deref(),
        Some(t.alice.name.as_str()),
        "admission stamps the authenticated user over what the client wrote"
    );
    let status = wait_phase(&bed, "accountbackup", &name, &["Completed"]);
    assert_eq!(status["requestedBy"], t.alice.name.as_str(), "{status}");

    // An owner with the full rewind-admin role still cannot rename the requester.
    let alice = t.alice.clone();
    t.cluster_binding(&alice, "tenancy-rewind-admin");
    refused(
        bed.wait_until(
            "RBAC to let alice annotate",
            Duration::from_secs(30),
            || {
                let result = t.alice.kubectl(
                    &bed,
                    &[
                        "annotate",
                        "accountbackup",
                        &name,
                        "rewind.dev/requested-by=the-ceo",
                        "--overwrite",
                    ],
                    None,
                );
                (!matches!(&result, Err(e) if e.contains("cannot patch"))).then_some(result)
            },
            String::new,
        ),
        "alice renaming the requester",
        &["cannot name someone else or be changed"],
    );
}

#[test]
fn a_tenant_cannot_move_a_namespace_into_another_account_or_hold_its_backups() {
    let bed = Bed::get();
    let mut t = Tenancy::new(&bed);
    let victim_project = t.project(&t.victim, &t.alice);
    let own = t.project(&t.attacker, &t.mallory);
    // The platform lets mallory edit her own namespace object and create namespaces.
    let role = unique("ns-editor");
    bed.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {role}}}\nrules:\n- {{apiGroups: [\"\"], resources: [namespaces], verbs: [get, patch, update], resourceNames: [{}]}}\n- {{apiGroups: [\"\"], resources: [namespaces], verbs: [create]}}\n",
        own.name
    ));
    let mallory = t.mallory.clone();
    t.cluster_binding(&mallory, &role);
    bed.wait_until(
        "RBAC to let mallory annotate her namespace",
        Duration::from_secs(30),
        || {
            t.mallory
                .kubectl(
                    &bed,
                    &[
                        "annotate",
                        "namespace",
                        &own.name,
                        "team=blue",
                        "--overwrite",
                    ],
                    None,
                )
                .ok()
        },
        String::new,
    );
    let refusal = ["set only by platform admins", PLATFORM_ADMINS];
    refused(
        t.mallory.kubectl(
            &bed,
            &[
                "label",
                "namespace",
                &own.name,
                &format!("rewind.dev/account={}", t.victim),
                "--overwrite",
            ],
            None,
        ),
        "mallory moving her namespace into the victim's account",
        &refusal,
    );
    refused(
        t.mallory.kubectl(
            &bed,
            &["label", "namespace", &own.name, "rewind.dev/account-"],
            None,
        ),
        "mallory taking her namespace out of her account",
        &refusal,
    );
    refused(
        t.mallory.kubectl(
            &bed,
            &[
                "annotate",
                "namespace",
                &own.name,
                "rewind.dev/busy=forever",
            ],
            None,
        ),
        "mallory marking a namespace busy",
        &refusal,
    );
    for (what, metadata) in [
        (
            "labelled into the victim's account",
            format!("labels: {{rewind.dev/account: {}}}", t.victim),
        ),
        (
            "posing as a restore's namespace",
            "annotations: {rewind.dev/restore-uid: anything}".to_string(),
        ),
    ] {
        let name = unique("evil");
        refused(
            t.mallory.create(
                &bed,
                &format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  {metadata}\n"
                ),
            ),
            &format!("mallory creating a namespace {what}"),
            &refusal,
        );
        assert!(!namespace_exists(&bed, &name));
    }

    // The victim's backup holds exactly the victim's project and is never held Queued.
    let (_, status) = t.completed_backup(&t.alice, &t.victim);
    let projects: Vec<&str> = status["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(projects, vec![victim_project.name.as_str()], "{status}");

    // The platform admin moves namespaces between accounts.
    bed.wait_until(
        "the platform admin to label a namespace",
        Duration::from_secs(30),
        || {
            t.admin
                .kubectl(
                    &bed,
                    &[
                        "label",
                        "namespace",
                        &own.name,
                        &format!("rewind.dev/account={}", t.victim),
                        "--overwrite",
                    ],
                    None,
                )
                .ok()
        },
        || "the platform admin could not label".into(),
    );
    let _ = bed.kubectl(&["delete", "clusterrole", &role]);
}

#[test]
fn annotations_that_run_commands_need_the_right_to_exec() {
    let bed = Bed::get();
    let t = Tenancy::new(&bed);
    let project = t.project(&t.victim, &t.alice);
    let ns = project.name.as_str();
    // Someone who may create and patch pods and deployments here, but not exec into them.
    let patcher = Person {
        name: unique("patcher"),
        groups: vec![],
    };
    bed.apply(&format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pod-patcher, namespace: {ns}}}\nrules:\n- {{apiGroups: [\"\"], resources: [pods], verbs: [get, list, create, patch, update]}}\n- {{apiGroups: [apps], resources: [deployments], verbs: [get, create, patch]}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: pod-patcher, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-patcher}}\nsubjects: [{{kind: User, name: {}}}]\n",
        patcher.name
    ));
    let pod = |name: &str, annotations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, annotations: {{{annotations}}}}}\nspec: {{containers: [{{name: db, image: postgres:17}}]}}\n"
        )
    };
    let says = ["pods/exec", "rewind.dev/backup-command"];
    bed.wait_until(
        "RBAC to let the patcher create pods",
        Duration::from_secs(30),
        || patcher.create(&bed, &pod("plain", "")).ok(),
        String::new,
    );
    refused(
        patcher.create(
            &bed,
            &pod("db", "rewind.dev/backup-command: \"cat /etc/shadow\""),
        ),
        "a pod whose annotation runs a command, by someone who may not exec",
        &says,
    );
    refused(
        patcher.kubectl(
            &bed,
            &[
                "-n",
                ns,
                "annotate",
                "pod",
                "plain",
                "rewind.dev/pre-backup=curl evil.example",
            ],
            None,
        ),
        "annotating a running pod with a hook",
        &["pods/exec", "rewind.dev/pre-backup"],
    );
    patcher
        .kubectl(
            &bed,
            &["-n", ns, "annotate", "pod", "plain", "team=db"],
            None,
        )
        .expect("other annotations stay the patcher's business");
    refused(
        patcher.create(
            &bed,
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}, annotations: {{rewind.dev/backup-command: \"cat /etc/shadow\"}}}}\n    spec: {{containers: [{{name: db, image: postgres:17}}]}}\n"
            ),
        ),
        "a Deployment whose pod template runs a command",
        &says,
    );

    // A namespace admin (who may exec anyway) sets them, and the cluster's controllers make
    // the Deployment's pods from the checked template.
    t.alice
        .kubectl(
            &bed,
            &[
                "-n",
                ns,
                "annotate",
                "pod",
                "plain",
                "rewind.dev/database=postgres",
            ],
            None,
        )
        .expect("a namespace admin may mark a database pod");
    t.alice
        .create(
            &bed,
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: db, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  template:\n    metadata: {{labels: {{app: db}}, annotations: {{rewind.dev/database: postgres}}}}\n    spec: {{containers: [{{name: db, image: postgres:17}}]}}\n"
            ),
        )
        .expect("a namespace admin may template a database pod");
    bed.wait_until(
        "the Deployment's pod, made by the ReplicaSet controller",
        Duration::from_secs(60),
        || {
            bed.jsonpath(
                &["-n", ns, "pods", "-l", "app=db"],
                "{.items[0].metadata.annotations.rewind\\.dev/database}",
            )
        },
        || bed.describe(ns),
    );
}

#[test]
fn a_restored_project_is_no_weaker_than_its_source_and_inert() {
    let bed = Bed::get();
    let t = Tenancy::new(&bed);
    let project = t.project(&t.victim, &t.alice);
    let ns = project.name.as_str();
    bed.kubectl_ok(&[
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=baseline",
    ]);
    bed.apply(&format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: migrate, namespace: {ns}}}
spec:
  suspend: true
  template: {{spec: {{restartPolicy: Never, containers: [{{name: m, image: busybox}}]}}}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
  annotations: {{external-dns.alpha.kubernetes.io/hostname: shop.example.com}}
spec: {{type: LoadBalancer, selector: {{app: web}}, ports: [{{port: 80}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow-everyone, namespace: {ns}}}
spec: {{podSelector: {{}}, ingress: [{{}}]}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-to-db, namespace: {ns}}}
spec: {{podSelector: {{matchLabels: {{app: db}}}}, ingress: [{{from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]}}]}}
"#
    ));
    // The Job was suspended in the source; un-suspend it so the copy's change is visible.
    bed.kubectl_ok(&[
        "-n",
        ns,
        "patch",
        "job",
        "migrate",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ]);
    let (backup, _) = t.completed_backup(&t.alice, &t.victim);

    // Targets the API server can judge are refused at admission.
    for (targets, says) in [
        (format!("{{{ns}: kube-evil}}"), "system namespace"),
        (format!("{{{ns}: default}}"), "system namespace"),
        ("{a: same, b: same}".to_string(), "same namespace"),
        (format!("{{{ns}: rewind-system}}"), "operator's namespace"),
    ] {
        refused(
            t.alice.create(
                &bed,
                &restore_yaml(&unique("pr"), &t.victim, &backup, &targets),
            ),
            &format!("a restore into {targets}"),
            &[says],
        );
    }

    let copy = unique("copy");
    let restore = unique("pr");
    t.alice
        .create(
            &bed,
            &restore_yaml(&restore, &t.victim, &backup, &format!("{{{ns}: {copy}}}")),
        )
        .expect("alice restores her project");
    let status = wait_phase(&bed, "projectrestore", &restore, &["Completed"]);
    let copied = object(&bed, &["namespace", &copy]);
    assert_eq!(
        copied["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "baseline",
        "{copied}"
    );
    assert_eq!(
        bed.jsonpath(&["-n", &copy, "job", "migrate"], "{.spec.suspend}")
            .as_deref(),
        Some("true")
    );
    let service = object(&bed, &["-n", &copy, "service", "web"]);
    assert_eq!(service["spec"]["type"], "ClusterIP", "{service}");
    assert!(
        service["metadata"]["annotations"]["external-dns.alpha.kubernetes.io/hostname"].is_null(),
        "{service}"
    );
    assert!(
        bed.kubectl(&["-n", &copy, "get", "networkpolicy", "allow-everyone"])
            .is_err()
    );
    assert!(
        bed.kubectl(&["-n", &copy, "get", "networkpolicy", "web-to-db"])
            .is_ok()
    );
    assert!(
        bed.kubectl(&[
            "-n",
            &copy,
            "get",
            "networkpolicy",
            "rewind-isolate-restored-project"
        ])
        .is_ok()
    );
    let adjusted = status["adjusted"].to_string();
    assert!(
        adjusted.contains("migrate") && adjusted.contains("suspended"),
        "{status}"
    );
    assert!(
        adjusted.contains("LoadBalancer changed to ClusterIP"),
        "{status}"
    );
    assert!(adjusted.contains("external-dns"), "{status}");
    let skipped = status["skipped"].to_string();
    assert!(
        skipped.contains("allow-everyone") && skipped.contains("reopen"),
        "{status}"
    );
    let _ = bed.kubectl(&["delete", "namespace", &copy, "--wait=false"]);
}

#[test]
fn admission_edges_are_decided_by_the_rules_never_by_an_evaluation_error() {
    let bed = Bed::get();
    let t = Tenancy::new(&bed);
    let project = t.project(&t.victim, &t.alice);
    let ns = project.name.as_str();
    let dry = |person: &Person, args: &[&str], yaml: Option<&str>| {
        let mut full: Vec<&str> = args.to_vec();
        full.push("--dry-run=server");
        person.kubectl(&bed, &full, yaml)
    };
    let no_errors = |result: &Result<String, String>| {
        if let Err(e) = result {
            assert!(
                !e.contains("expression")
                    && !e.contains("no such key")
                    && !e.contains("evaluation"),
                "a policy failed to evaluate instead of deciding: {e}"
            );
        }
    };
    // A user with no groups at all: refused by the rule, naming who may.
    let nobody = Person {
        name: t.mallory.name.clone(),
        groups: vec![],
    };
    let result = dry(
        &nobody,
        &["create", "-f", "-"],
        Some(&backup_yaml(&unique("ab"), &t.victim, "")),
    );
    no_errors(&result);
    refused(result, "a user in no group", &["rewind:owners:"]);

    // DELETE carries no object, only the old one: a non-owner is refused, the owner allowed.
    let (backup, _) = t.completed_backup(&t.alice, &t.victim);
    let result = dry(&t.mallory, &["delete", "accountbackup", &backup], None);
    no_errors(&result);
    refused(
        result,
        "mallory deleting the victim's backup",
        &["forbidden"],
    );
    let result = dry(&t.admin, &["delete", "accountbackup", &backup], None);
    no_errors(&result);
    result.expect("the platform admin deletes any backup");

    // Objects with no labels, no annotations, no template metadata at all.
    let result = dry(
        &t.admin,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {}}}\n",
            unique("bare")
        )),
    );
    no_errors(&result);
    result.expect("a namespace without labels");
    let result = dry(&t.admin, &["annotate", "namespace", ns, "x=y"], None);
    no_errors(&result);
    result.expect("an annotation on a namespace that has no rewind.dev/busy");
    let result = dry(
        &t.alice,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: c, namespace: {ns}}}\nspec:\n  schedule: \"0 0 * * *\"\n  jobTemplate: {{spec: {{template: {{spec: {{restartPolicy: Never, containers: [{{name: c, image: busybox}}]}}}}}}}}\n"
        )),
    );
    no_errors(&result);
    result.expect("a CronJob whose template has no metadata");
    let result = dry(
        &t.alice,
        &["create", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: bare, namespace: {ns}}}\nspec: {{containers: [{{name: c, image: busybox}}]}}\n"
        )),
    );
    no_errors(&result);
    result.expect("a pod without annotations");
}

#[test]
fn a_tenant_who_takes_a_slots_backup_name_does_not_stop_another_accounts_schedule() {
    let bed = Bed::get();
    let t = Tenancy::new(&bed);
    let _project = t.project(&t.victim, &t.alice);
    let schedule = unique("minutely");
    // The next two slots' names are predictable; mallory takes both for her own account.
    let now = jiff::Timestamp::now().as_second();
    let slots: Vec<jiff::Timestamp> = (1..=2)
        .map(|n| jiff::Timestamp::from_second((now / 60 + n) * 60).expect("a slot"))
        .collect();
    for slot in &slots {
        let name = format!("{schedule}-{}", slot.strftime("%Y%m%d%H%M"));
        t.mallory
            .create(&bed, &backup_yaml(&name, &t.attacker, ""))
            .expect("any free name is hers to take");
    }
    bed.apply(&format!(
        "apiVersion: rewind.dev/v1alpha1\nkind: BackupSchedule\nmetadata: {{name: {schedule}}}\nspec: {{account: {}, schedule: \"* * * * *\", retention: {{keepLast: 5}}}}\n",
        t.victim
    ));
    let uid = bed
        .jsonpath(&["backupschedule", &schedule], "{.metadata.uid}")
        .expect("the schedule's uid");
    let backup = bed.wait_until(
        "the victim's slot backed up under a name of its own",
        Duration::from_secs(200),
        || {
            let list = object(
                &bed,
                &[
                    "accountbackup",
                    "-l",
                    &format!("rewind.dev/schedule={schedule}"),
                ],
            );
            list["items"]
                .as_array()?
                .iter()
                .find(|b| {
                    b["spec"]["account"] == t.victim.as_str()
                        && b["metadata"]["ownerReferences"][0]["uid"] == uid.as_str()
                })
                .cloned()
        },
        || {
            format!(
                "{}\n--- operator log ---\n{}",
                object(&bed, &["accountbackup"]),
                operator(&bed).log_tail()
            )
        },
    );
    let name = backup["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        slots
            .iter()
            .any(|slot| name.starts_with(&format!("{schedule}-{}-", slot.strftime("%Y%m%d%H%M")))),
        "a generated name beside the taken one: {name}"
    );
    wait_phase(&bed, "accountbackup", &name, &["Completed"]);
    let events = bed.kubectl_ok(&[
        "get",
        "events",
        "-A",
        "--field-selector",
        &format!("involvedObject.name={schedule}"),
    ]);
    assert!(events.contains("NameTaken"), "{events}");
    bed.kubectl_ok(&["delete", "backupschedule", &schedule, "--wait=false"]);
}
