//! An architectural rule, checked: the daemon's modules form the layers
//! of the map in `lib.rs` ([`accessd::LAYERS`]).
//! - Every `pub mod` of `lib.rs` is in exactly one layer, and every module
//!   the map names exists.
//! - No top-level module imports (`crate::X`) a module of a layer above
//!   its own.
//! - No import cycle between the top-level modules, nor between the files
//!   of one subsystem folder (`super::X`).
//! - The identity keys (`keys`) import nothing of the daemon's.
//! - Nobody outside `auth`, `access` and `store` decides a member's
//!   standing from their row.
//!
//! Start-up (`lib.rs`, `main.rs`) and the test fixture (`testing.rs`) wire
//! everything together and are left out; so are unit-test modules.

#![allow(clippy::unwrap_used, reason = "a test")]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

#[test]
fn the_map_names_every_module_once() {
    let problems = unmapped(
        accessd::LAYERS,
        &pub_mods(&fs::read_to_string(src().join("lib.rs")).unwrap()),
    );
    assert!(
        problems.is_empty(),
        "lib.rs's LAYERS and its pub mods differ:\n{}",
        problems.join("\n")
    );
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let graph = crate_graph();
    assert!(
        graph.contains_key("access") && graph.contains_key("gateway"),
        "{graph:?}"
    );
    let upward = upward_imports(accessd::LAYERS, &graph);
    assert!(
        upward.is_empty(),
        "imports that go up a layer:\n{}",
        upward.join("\n")
    );
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let graph = crate_graph();
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "import cycle between daemon modules: {}",
            cycle.join(" -> ")
        );
    }
}

/// The identity keys are the bottom of the foundations: `keys` imports
/// nothing of the daemon's.
#[test]
fn the_keys_stand_alone() {
    let graph = crate_graph();
    assert!(
        graph["keys"].is_empty(),
        "keys (a foundation) imports {:?}",
        graph["keys"]
    );
}

/// The checker catches both faults: an import that goes up a layer (as
/// `aws` importing `portal::tls` did), and a module the map does not name
/// (as `sso` was).
#[test]
fn the_layer_checker_sees_an_upward_import_and_an_unnamed_module() {
    let layers: &[(&str, &[&str])] = &[
        ("doors", &["portal"]),
        ("subsystems", &["aws", "vpn"]),
        ("foundations", &["store"]),
    ];
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph
        .entry("portal".into())
        .or_default()
        .insert("aws".into());
    graph
        .entry("aws".into())
        .or_default()
        .insert("store".into());
    graph.entry("vpn".into()).or_default().insert("aws".into());
    assert!(upward_imports(layers, &graph).is_empty());
    graph
        .entry("aws".into())
        .or_default()
        .insert("portal".into());
    assert_eq!(
        upward_imports(layers, &graph),
        ["aws (subsystems) imports portal (doors)"]
    );
    let lib = "pub mod aws;\npub mod portal;\n#[cfg(test)]\npub mod testing;\npub mod sso;\npub mod store;\nmod private;\n";
    assert_eq!(
        pub_mods(lib),
        BTreeSet::from(["aws", "portal", "sso", "store"].map(String::from))
    );
    assert_eq!(
        unmapped(layers, &pub_mods(lib)),
        [
            "sso is a pub mod the map does not name",
            "vpn is in the map but is no pub mod"
        ]
    );
}

/// `X imports Y` for each import of a module from a layer above X's.
fn upward_imports(
    layers: &[(&str, &[&str])],
    graph: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<String> {
    let layer_of = |module: &str| {
        layers
            .iter()
            .position(|(_, modules)| modules.contains(&module))
    };
    let mut found = Vec::new();
    for (module, uses) in graph {
        let Some(own) = layer_of(module) else {
            continue;
        };
        for used in uses {
            if let Some(theirs) = layer_of(used).filter(|theirs| *theirs < own) {
                found.push(format!(
                    "{module} ({}) imports {used} ({})",
                    layers[own].0, layers[theirs].0
                ));
            }
        }
    }
    found
}

/// The differences between the map and the `pub mod`s.
fn unmapped(layers: &[(&str, &[&str])], mods: &BTreeSet<String>) -> Vec<String> {
    let named: Vec<&str> = layers.iter().flat_map(|(_, m)| m.iter().copied()).collect();
    let mut problems = Vec::new();
    for module in mods {
        match named.iter().filter(|n| **n == module.as_str()).count() {
            0 => problems.push(format!("{module} is a pub mod the map does not name")),
            1 => {}
            _ => problems.push(format!("{module} is in more than one layer")),
        }
    }
    for name in named {
        if !mods.contains(name) {
            problems.push(format!("{name} is in the map but is no pub mod"));
        }
    }
    problems.sort();
    problems
}

/// The `pub mod`s of `lib.rs`, without those only built for tests.
fn pub_mods(lib: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = lib.lines().map(str::trim).collect();
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i == 0 || lines[i - 1] != "#[cfg(test)]")
        .filter_map(|(_, line)| line.strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').to_string())
        .collect()
}

#[test]
fn files_of_a_subsystem_have_no_import_cycle() {
    for folder in folders() {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in rust_files(&folder) {
            let name = module_name(&folder, &file);
            let uses = imports(&code_of(&file), "super::");
            graph.entry(name).or_default().extend(uses);
        }
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "import cycle inside {}: {}",
                folder.display(),
                cycle.join(" -> ")
            );
        }
    }
}

/// Where a member's standing may be read off their row: the
/// authentication service that decides it, the store that keeps it, and the
/// access service that changes it (add, enable, disable, enroll).
const STANDING_OWNERS: &[&str] = &["auth", "access", "store"];

#[test]
fn nobody_else_decides_a_members_standing() {
    let mut found = Vec::new();
    for file in rust_files(&src()) {
        let relative = file
            .strip_prefix(src())
            .unwrap()
            .to_string_lossy()
            .to_string();
        let top = relative.split(['/', '.']).next().unwrap().to_string();
        if STANDING_OWNERS.contains(&top.as_str()) || top == "testing" {
            continue;
        }
        for (line, hit) in standing_checks(&code_of(&file)) {
            found.push(format!(
                "{relative} (line {line} without comments and tests): {hit}"
            ));
        }
    }
    assert!(
        found.is_empty(),
        "ask crate::auth::Standing instead of comparing a user's state or expiry:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_standing_checker_sees_each_kind_of_comparison() {
    let code = "if user.state == UserState::Active {}\nif u.state != UserState::Disabled {}\nmatch u.state { UserState::Pending => 1, _ => 2 }\nlet e = user.is_expired(now);\nw.set_user_state(&n, UserState::Active)?;\nStanding::of(&u, now)";
    let hits: Vec<usize> = standing_checks(code)
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(hits, [1, 2, 3, 4]);
}

/// Lines that compare a user's state or expiry: `== UserState::`,
/// `!= UserState::`, a `UserState::` match arm, `is_expired(`.
fn standing_checks(code: &str) -> Vec<(usize, String)> {
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            let squeezed: String = line.split_whitespace().collect();
            squeezed.contains("==UserState::")
                || squeezed.contains("!=UserState::")
                || (squeezed.contains("UserState::") && squeezed.contains("=>"))
                || squeezed.contains("is_expired(")
        })
        .map(|(i, line)| (i + 1, line.trim().to_string()))
        .collect()
}

#[test]
fn the_checker_sees_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert!(find_cycle(&graph).is_none());
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(find_cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let code = "use crate::store::{Store, StoreError};\nuse crate::{audit::x, vpn};\n#[cfg(test)]\nmod fixtures {\n    use crate::admin;\n}\nlet x = crate::aws::f();\n#[cfg(test)]\nmod tests { use crate::admin; }";
    let found = imports(&strip_tests(code), "crate::");
    assert_eq!(
        found,
        BTreeSet::from(["audit".into(), "aws".into(), "store".into(), "vpn".into()])
    );
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level module → the top-level modules it names with `crate::`.
fn crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let relative = file.strip_prefix(src()).unwrap();
        let top = relative
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "main", "testing"].contains(&top.as_str()) {
            continue;
        }
        let mut uses = imports(&code_of(&file), "crate::");
        uses.remove(&top);
        graph.entry(top).or_default().extend(uses);
    }
    graph
}

fn folders() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A file's module name inside `folder` (`mod.rs` is the folder itself).
fn module_name(folder: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(folder).unwrap();
    let first = relative
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    match first.trim_end_matches(".rs") {
        "mod" => "mod".into(),
        name => name.to_string(),
    }
}

fn code_of(file: &Path) -> String {
    strip_tests(&fs::read_to_string(file).unwrap())
}

/// The code without comments and without `#[cfg(test)]` modules.
fn strip_tests(code: &str) -> String {
    let lines: Vec<&str> = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let mut item = i + 1;
        while item < lines.len() && lines[item].trim_start().starts_with("#[") {
            item += 1;
        }
        if lines[i].trim() == "#[cfg(test)]" && item < lines.len() && lines[item].contains("mod ") {
            // Skip the module: one line (`mod x;`), or to its closing brace.
            i = item;
            let mut depth = 0i32;
            loop {
                depth += lines[i].matches('{').count() as i32;
                depth -= lines[i].matches('}').count() as i32;
                i += 1;
                if depth <= 0 || i >= lines.len() {
                    break;
                }
            }
            continue;
        }
        out.push(lines[i]);
        i += 1;
    }
    out.join("\n")
}

/// The first path segments after `prefix` (`crate::` or `super::`),
/// including those inside `use prefix{a, b::c}` groups.
fn imports(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in code.match_indices(prefix) {
        let before = code[..at].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[at + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() && name != "self" {
                found.insert(name);
            }
        }
    }
    found
}

/// A cycle in `graph`, as the path around it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The files of the paths whose audit details are typed (issue 24,
/// finding 11): SSO, SSH certificates, HA. Each builds its details only
/// with `NewAuditEvent::with(&TypedDetail { .. })`, never from `json!` or a
/// hand-made `serde_json::Value`, so a record's fields are named in one
/// struct that the vocabulary test parses records back into.
const TYPED_DETAIL_FILES: &[&str] = &[
    "access/sso.rs",
    "access/certs.rs",
    "portal/sso_login.rs",
    "portal/sso_totp.rs",
    "portal/sso_pages.rs",
    "portal/sso_records.rs",
    "sso",
    "ha",
    "takeover.rs",
];

/// Lines allowed to build JSON by hand in those files, with why.
const UNTYPED_ALLOWED: &[(&str, &str)] = &[
    // Not an audit record: the node's own row in `ha_nodes` as it stops.
    (
        "ha/mod.rs",
        ".report(\"stopped\", generation, &json!({}), CALL_LIMIT)",
    ),
];

#[test]
fn typed_paths_build_no_audit_detail_by_hand() {
    let mut found = Vec::new();
    for path in TYPED_DETAIL_FILES {
        let at = src().join(path);
        let files = match at.is_dir() {
            true => rust_files(&at),
            false => vec![at],
        };
        for file in files {
            let relative = file
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .to_string();
            let code = strip_tests(&fs::read_to_string(&file).unwrap());
            for (line, hit) in untyped_details(&code) {
                let allowed = UNTYPED_ALLOWED
                    .iter()
                    .any(|(f, l)| *f == relative && hit.contains(l));
                if !allowed {
                    found.push(format!(
                        "{relative} (line {line} without comments and tests): {hit}"
                    ));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "build these audit details with `.with(&TypedDetail {{ .. }})` \
         (crate::audit::detail), not by hand:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_untyped_detail_checker_sees_json_and_hand_made_values() {
    let code = "let d = json!({ \"a\": 1 });\nlet e = event(k, a, s).detail(d);\nlet x = serde_json::json!(3);\nlet why = refused.detail();\nlet e = event(k, a, s).with(&Typed { a: 1 });\nmap.insert(\"totp\".into(), Value::Bool(true));";
    let hits: Vec<usize> = untyped_details(code)
        .into_iter()
        .map(|(line, _)| line)
        .collect();
    assert_eq!(hits, [1, 2, 3, 6]);
}

/// Lines that build a detail by hand: `json!(`, `.detail(` with an
/// argument (the untyped builder), or a `serde_json::Value` put together
/// piece by piece (`Value::Bool`, `Value::Object`, `.as_object_mut()`).
fn untyped_details(code: &str) -> Vec<(usize, String)> {
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            let squeezed: String = line.split_whitespace().collect();
            squeezed.contains("json!(")
                || (squeezed.contains(".detail(") && !squeezed.contains(".detail()"))
                || squeezed.contains("Value::Bool")
                || squeezed.contains("Value::Object")
                || squeezed.contains("as_object_mut(")
        })
        .map(|(i, line)| (i + 1, line.trim().to_string()))
        .collect()
}
