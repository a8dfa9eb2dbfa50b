//! The README's "Try it end to end": the demo's vendors (the fakes `examples/demo-vendors.rs`
//! serves, here on free ports), `config/demo.toml` and the example CSVs copied into a
//! directory laid out like the repository, then the README block's commands run in order:
//! the first sync, the CSV change, the plan (`~ update`, `~ roles`, `< disable`), the second
//! sync, `runs`. The fakes' final users are checked.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::cmd::{code, out, stdout};
use crate::support::demo::{COVATA_PORT, DemoVendors, PRIMAVERA_PORT, VALUEKEEP_PORT};

/// The repository's root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The commands of the README's demo block (the first `sh` block under "Try it end to
/// end"), comments cut, `&&` chains split.
fn readme_demo_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let section = readme
        .split_once("### Try it end to end")
        .expect("README.md has no \"### Try it end to end\" section")
        .1;
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .expect("the demo section has no sh block")
        .0;
    block
        .lines()
        .map(|l| l.split(" # ").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .flat_map(|l| l.split("&&").map(|c| c.trim().to_string()))
        .collect()
}

/// The real binary run as `cargo run -- ARGS` would, in `dir`, pointed at the fakes.
fn dirsync(dir: &Path, vendors: &DemoVendors, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dirsync"));
    cmd.args(args).current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("DIRSYNC_") || k == "NOTIFY_SOCKET" || k == "WATCHDOG_USEC" {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1").envs(vendors.config_env());
    cmd.output().unwrap()
}

#[test]
fn the_readme_demo_runs_against_the_demo_vendors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for file in [
        "config/demo.toml",
        "examples/demo/users.csv",
        "examples/demo/users-changed.csv",
    ] {
        std::fs::create_dir_all(d.join(file).parent().unwrap()).unwrap();
        std::fs::copy(root().join(file), d.join(file)).unwrap();
    }
    // The config names the ports the example serves by default.
    let config = std::fs::read_to_string(root().join("config/demo.toml")).unwrap();
    for port in [COVATA_PORT, PRIMAVERA_PORT, VALUEKEEP_PORT] {
        assert!(
            config.contains(&format!("\"http://127.0.0.1:{port}")),
            "config/demo.toml does not name port {port}"
        );
    }
    let vendors = DemoVendors::start(0, 0, 0);

    let commands = readme_demo_commands();
    let mut outputs: Vec<(String, Output)> = Vec::new();
    for c in &commands {
        let words: Vec<&str> = c.split_whitespace().collect();
        match words.as_slice() {
            // The stand-ins: started above, on free ports.
            ["cargo", "run", "--example", "demo-vendors", ..] => {}
            ["mkdir", "-p", path] => std::fs::create_dir_all(d.join(path)).unwrap(),
            ["chmod", mode, path] => {
                use std::os::unix::fs::PermissionsExt;
                let mode = u32::from_str_radix(mode, 8).unwrap();
                std::fs::set_permissions(d.join(path), std::fs::Permissions::from_mode(mode))
                    .unwrap();
            }
            ["cp", from, to] => {
                let mut to = d.join(to);
                if to.is_dir() {
                    to = to.join(Path::new(from).file_name().unwrap());
                }
                std::fs::copy(d.join(from), to).unwrap();
            }
            ["cargo", "run", "--", args @ ..] => {
                let o = dirsync(d, &vendors, args);
                outputs.push((c.clone(), o));
            }
            _ => panic!("README demo: a command this test does not know: {c:?}"),
        }
    }
    let steps: Vec<&str> = outputs.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(
        steps,
        [
            "cargo run -- sync --yes --config config/demo.toml",
            "cargo run -- plan --config config/demo.toml",
            "cargo run -- sync --yes --config config/demo.toml",
            "cargo run -- runs --config config/demo.toml",
        ],
        "the README's demo commands changed: {commands:#?}"
    );
    let [first_sync, plan, second_sync, runs] = &outputs[..] else {
        unreachable!()
    };
    let (first_sync, plan, second_sync, runs) = (&first_sync.1, &plan.1, &second_sync.1, &runs.1);

    // The first sync creates everyone in scope and enabled; it lists who it skipped.
    assert_eq!(code(first_sync), 0, "{}", out(first_sync));
    // The README's chmod keeps the secrets warning away.
    assert!(
        !crate::support::cmd::stderr(first_sync).contains("holds secrets"),
        "{}",
        out(first_sync)
    );
    let text = stdout(first_sync);
    assert!(
        text.contains("  - skipped  E1005  (scope: excluded group contractors)"),
        "{text}"
    );
    assert!(
        text.contains("  - skipped  E1006  (disabled in the source)"),
        "{text}"
    );

    // The plan after the CSV change: exactly the README's three changes on each target.
    assert_eq!(code(plan), 2, "{}", out(plan));
    let text = stdout(plan);
    for target in ["demo-covata", "demo-primavera", "demo-valuekeep"] {
        let section = text
            .split_once(&format!("target {target} "))
            .unwrap_or_else(|| panic!("no {target} in\n{text}"))
            .1
            .split("\ntarget ")
            .next()
            .unwrap();
        let ops: Vec<&str> = section
            .lines()
            .filter(|l| l.starts_with("  ~ ") || l.starts_with("  < ") || l.starts_with("  + "))
            .map(|l| l.split("  (").next().unwrap().trim_end())
            .collect();
        let ops: Vec<String> = ops
            .iter()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            ops,
            ["~ update E1001", "~ roles E1002", "< disable E1003"],
            "{target}:\n{text}"
        );
    }
    assert!(text.contains("lastName: Lovelace -> King"), "{text}");
    assert!(text.ends_with("9 changes pending.\n"), "{text}");

    assert_eq!(code(second_sync), 0, "{}", out(second_sync));
    assert!(
        stdout(second_sync).contains("Applied 9 changes."),
        "{}",
        out(second_sync)
    );

    // `runs`: the two syncs, then the dry run apart.
    assert_eq!(code(runs), 0, "{}", out(runs));
    let text = stdout(runs);
    let (real, dry) = text
        .split_once("Dry runs (plan: nothing was sent):")
        .unwrap_or_else(|| panic!("no dry run section:\n{text}"));
    assert_eq!(real.matches(" manual ").count(), 2, "{text}");
    assert_eq!(dry.matches(" dry_run ").count(), 1, "{text}");

    // The filters on the same history (not in the README).
    let o = dirsync(
        d,
        &vendors,
        &[
            "runs",
            "--config",
            "config/demo.toml",
            "--trigger",
            "dry_run",
            "--format",
            "json",
        ],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let dry: Vec<(String, bool)> = json["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["trigger"].as_str().unwrap().to_string(),
                r["dry_run"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(dry, [("dry_run".to_string(), true)]);
    let o = dirsync(
        d,
        &vendors,
        &[
            "runs",
            "--config",
            "config/demo.toml",
            "--status",
            "failed,blocked",
            "--since",
            "1d",
        ],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        stdout(&o).contains("No runs match the filters"),
        "{}",
        out(&o)
    );
    let o = dirsync(
        d,
        &vendors,
        &[
            "runs",
            "--config",
            "config/demo.toml",
            "--trigger",
            "manual",
            "-n",
            "1",
            "--since",
            "2000-01-01",
        ],
    );
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(stdout(&o).matches(" manual ").count(), 1, "{}", out(&o));
    let o = dirsync(
        d,
        &vendors,
        &[
            "runs",
            "--config",
            "config/demo.toml",
            "--since",
            "last tuesday",
        ],
    );
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        crate::support::cmd::stderr(&o).contains("--since: \"last tuesday\" is neither a duration"),
        "{}",
        out(&o)
    );

    // What the stand-ins hold at the end.
    let mut covata: Vec<(String, Option<String>, Vec<String>, bool)> = vendors
        .covata
        .users()
        .into_iter()
        .map(|u| (u.email, u.last_name, u.roles, u.enabled))
        .collect();
    covata.sort();
    let s = |v: &[&str]| v.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(
        covata,
        [
            (
                "ada.lovelace@example.com".to_string(),
                Some("King".to_string()),
                s(&["ROLE_SYSTEM_ADMIN"]),
                true
            ),
            (
                "grace.hopper@example.com".to_string(),
                Some("Hopper".to_string()),
                s(&["ROLE_SYSTEM_ADMIN"]),
                true
            ),
            (
                "linus.torvalds@example.com".to_string(),
                Some("Torvalds".to_string()),
                s(&["ROLE_COLLABORATOR"]),
                false
            ),
            (
                "margaret.hamilton@example.com".to_string(),
                Some("Hamilton".to_string()),
                s(&["ROLE_COLLABORATOR"]),
                true
            ),
        ]
    );
    let mut primavera: Vec<(String, String, Vec<String>, bool)> = vendors
        .primavera
        .users()
        .into_iter()
        .map(|u| (u.login_id, u.last_name, u.roles, u.disabled))
        .collect();
    primavera.sort();
    assert_eq!(
        primavera,
        [
            (
                "ada.lovelace@example.com".into(),
                "King".into(),
                s(&["PrimaveraAdmin"]),
                false
            ),
            (
                "grace.hopper@example.com".into(),
                "Hopper".into(),
                s(&["PrimaveraAdmin"]),
                false
            ),
            (
                "ken.thompson@example.com".into(),
                "Thompson".into(),
                s(&["PrimaveraViewer"]),
                false
            ),
            (
                "linus.torvalds@example.com".into(),
                "Torvalds".into(),
                s(&["PrimaveraViewer"]),
                true
            ),
            (
                "margaret.hamilton@example.com".into(),
                "Hamilton".into(),
                s(&["PrimaveraViewer"]),
                false
            ),
        ]
    );
    let mut valuekeep: Vec<(String, String, Vec<String>, bool)> = vendors
        .valuekeep
        .users()
        .into_iter()
        .map(|u| (u.user_key, u.name, u.roles, u.is_active))
        .collect();
    valuekeep.sort();
    assert_eq!(
        valuekeep,
        [
            ("E1001".into(), "Ada King".into(), s(&["ADMIN"]), true),
            ("E1002".into(), "Grace Hopper".into(), s(&["ADMIN"]), true),
            (
                "E1003".into(),
                "Linus Torvalds".into(),
                s(&["REQUESTER"]),
                false
            ),
            (
                "E1004".into(),
                "Margaret Hamilton".into(),
                s(&["REQUESTER"]),
                true
            ),
            (
                "E1005".into(),
                "Ken Thompson".into(),
                s(&["REQUESTER"]),
                true
            ),
        ]
    );
}
