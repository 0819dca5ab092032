//! A fuzzer for the manifest parser and validation, on the stable
//! toolchain: mutations of real manifests (the examples, plus documents of
//! every kind) by YAML syntax, Berth's field names and hostile values, each
//! parsed and decoded as `berth apply` does. `berth bench fuzz --inputs N`
//! runs it and prints inputs per second; a panic, or an input that takes
//! longer than the hang limit, is a failure (printed and saved).
//!
//! Deterministic for a seed: a failure is reproduced with `--seed`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::api::validate::decode;
use crate::api::yaml::parse_documents;

const SEEDS: &[&str] = &[
    include_str!("../../manifests/examples/00-lifecycle-policy.yaml"),
    include_str!("../../manifests/examples/10-dev-container.yaml"),
    include_str!("../../manifests/examples/15-laptop.yaml"),
    include_str!("../../manifests/examples/20-workspaces.yaml"),
    "apiVersion: berth.dev/v1alpha1
kind: Workspace
metadata:
  name: alice
  namespace: team
  labels: {team: a}
spec:
  owner: alice
  template: {name: dev, version: 2}
  running: true
  deletionPolicy: Delete
  resources: {cpu: 1024, memory: 4096}
  parameters: {enable_vscode_web: true, github_runner_url: https://github.com/a/b}
  schedule:
    autostop: {afterInactivity: 2h}
    autostart: {cron: \"0 8 * * 1-5\", timezone: Europe/Paris}
",
    "apiVersion: berth.dev/v1alpha1
kind: GitSource
metadata:
  name: platform
spec:
  repository: https://github.com/acme/workspaces.git
  branch: main
  folder: deploy/ws
  interval: 5m
  prune: true
",
    "apiVersion: berth.dev/v1alpha1
kind: LifecyclePolicy
metadata:
  name: default
spec:
  maxLifetime: 12h
  dormancyThreshold: 720h
  dormantDeletion: 2160h
  requireActiveVersion: true
",
];

/// Pieces the mutator splices in.
const TOKENS: &[&str] = &[
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "<<: *a",
    "!!binary ",
    "!!str ",
    "!!int ",
    "!custom ",
    "---\n",
    "...\n",
    "\"",
    "'",
    "|\n",
    ">-\n",
    "# c",
    "\t",
    "\n",
    "? ",
    "%YAML 1.2\n",
    "\\u0000",
    "\u{feff}",
    "\u{0}",
    "\r\n",
    "  ",
    "    ",
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "namespace",
    "labels",
    "annotations",
    "spec",
    "status",
    "owner",
    "template",
    "version",
    "running",
    "deletionPolicy",
    "resources",
    "cpu",
    "memory",
    "parameters",
    "schedule",
    "autostop",
    "afterInactivity",
    "autostart",
    "cron",
    "timezone",
    "infrastructure",
    "region",
    "cluster",
    "subnets",
    "fileSystemId",
    "efsRootDirectory",
    "container",
    "image",
    "homePath",
    "env",
    "secrets",
    "scripts",
    "apps",
    "maxLifetime",
    "dormancyThreshold",
    "repository",
    "branch",
    "folder",
    "interval",
    "Workspace",
    "WorkspaceTemplate",
    "LifecyclePolicy",
    "GitSource",
    "berth.dev/v1alpha1",
    "99999999999999999999",
    "-1",
    "0",
    "1e309",
    "-0",
    "NaN",
    ".inf",
    "-.inf",
    "3000000000h",
    "1ns",
    "0s",
    "292471208677y",
    "0 8 30 2 *",
    "* * * * * * *",
    "/../..",
    "~",
    "null",
    "NO",
    "yes",
    "on",
    "0x10",
    "0o17",
    "2147483648",
    "4294967296",
    "18446744073709551616",
    "Ωμέγα",
    "👩‍💻",
    "$(id)",
    "`id`",
    "BERTH_AGENT_TOKEN",
    "HOME",
    "-oProxyCommand=x",
    "ssh://-o",
    "https://bot:TOKEN@h/r",
    "Europe/Nowhere",
];

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    /// Inputs tried.
    pub inputs: u64,
    /// Inputs that parsed as YAML.
    pub parsed: u64,
    /// Documents that decoded as a valid object.
    pub valid: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Panics and slow inputs: (what, the input).
    pub failures: Vec<(String, String)>,
    /// The slowest input's time.
    pub slowest: Duration,
}

impl Report {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        self.inputs as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One mutated input.
pub fn mutate(rng: &mut StdRng) -> String {
    let mut s = SEEDS[rng.random_range(0..SEEDS.len())].to_string();
    for _ in 0..rng.random_range(1..=8) {
        let at = char_boundary(&s, rng.random_range(0..=s.len()));
        match rng.random_range(0..9) {
            // Insert a token.
            0..=2 => s.insert_str(at, TOKENS[rng.random_range(0..TOKENS.len())]),
            // Delete a run of characters.
            3 => {
                let end = char_boundary(&s, at + rng.random_range(1..16));
                s.replace_range(at..end, "");
            }
            // Replace a character with a random one.
            4 => {
                let end = s[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                let c = char::from_u32(rng.random_range(0..0x250)).unwrap_or('?');
                s.replace_range(at..end, &c.to_string());
            }
            // Duplicate, drop or re-indent a line.
            5 | 6 => {
                let mut lines: Vec<String> = s.lines().map(str::to_string).collect();
                if lines.is_empty() {
                    continue;
                }
                let i = rng.random_range(0..lines.len());
                match rng.random_range(0..4) {
                    0 => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    1 => {
                        lines.remove(i);
                    }
                    2 => lines[i].insert_str(0, "  "),
                    _ => {
                        let l = lines[i].trim_start().to_string();
                        lines[i] = l;
                    }
                }
                s = lines.join("\n");
            }
            // Splice a piece of another seed.
            7 => {
                let other = SEEDS[rng.random_range(0..SEEDS.len())];
                let a = char_boundary(other, rng.random_range(0..other.len()));
                let b = char_boundary(other, a + rng.random_range(0..200));
                s.insert_str(at, &other[a..b.max(a)]);
            }
            // A long value.
            _ => {
                let n = rng.random_range(1..20_000);
                s.insert_str(at, &"x".repeat(n));
            }
        }
    }
    s
}

/// Parses and decodes `input` as `berth apply` does; returns (parsed,
/// valid documents).
pub fn exercise(input: &str) -> (bool, u64) {
    match parse_documents(input) {
        Ok(docs) => {
            let valid = docs
                .iter()
                .enumerate()
                .filter(|(i, d)| decode(d, Some(*i)).is_ok())
                .count() as u64;
            (true, valid)
        }
        Err(_) => (false, 0),
    }
}

/// Runs `inputs` mutated inputs from `seed`. An input slower than `hang`
/// is a failure; one that never returns stops the run (a watchdog prints
/// it and exits the process with status 2). `quiet` silences the default
/// panic message of each panicking input for the run (the process-wide
/// hook: leave it off where other threads may panic meanwhile, as in
/// tests).
pub fn run(inputs: u64, seed: u64, hang: Duration, quiet: bool) -> Report {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut report = Report::default();
    let started = Instant::now();
    let progress = Arc::new(AtomicU64::new(0));
    let current = Arc::new(std::sync::Mutex::new(String::new()));
    let watchdog = {
        let (progress, current) = (progress.clone(), current.clone());
        // An input that has not returned after this is a hang.
        let limit = (hang * 5).max(Duration::from_secs(10));
        std::thread::spawn(move || {
            let (mut last, mut since) = (u64::MAX - 1, Instant::now());
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let now = progress.load(Ordering::SeqCst);
                if now == u64::MAX {
                    return;
                }
                if now != last {
                    (last, since) = (now, Instant::now());
                } else if since.elapsed() > limit {
                    let input = current.lock().map(|c| c.clone()).unwrap_or_default();
                    eprintln!("berth fuzz: input {now} does not return (a hang):\n{input}");
                    std::process::exit(2);
                }
            }
        })
    };
    let hook = quiet.then(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        hook
    });
    for i in 0..inputs {
        let input = mutate(&mut rng);
        if let Ok(mut c) = current.lock() {
            c.clone_from(&input);
        }
        let t = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| exercise(&input)));
        let took = t.elapsed();
        report.slowest = report.slowest.max(took);
        match outcome {
            Ok((parsed, valid)) => {
                report.parsed += u64::from(parsed);
                report.valid += valid;
            }
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                report
                    .failures
                    .push((format!("panic: {msg}"), input.clone()));
            }
        }
        if took > hang {
            report
                .failures
                .push((format!("slow: {took:?} (limit {hang:?})"), input));
        }
        report.inputs = i + 1;
        progress.store(i + 1, Ordering::SeqCst);
    }
    if let Some(hook) = hook {
        std::panic::set_hook(hook);
    }
    progress.store(u64::MAX, Ordering::SeqCst);
    let _ = watchdog.join();
    report.elapsed = started.elapsed();
    report
}

/// Writes each failing input to `dir` (`<n>.yaml`); returns the paths.
pub fn save_failures(report: &Report, dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    if report.failures.is_empty() {
        return Ok(paths);
    }
    std::fs::create_dir_all(dir)?;
    for (n, (what, input)) in report.failures.iter().enumerate() {
        let p = dir.join(format!("{n}.yaml"));
        std::fs::write(&p, format!("# {what}\n{input}"))?;
        paths.push(p);
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_varied() {
        let a: Vec<String> = {
            let mut r = StdRng::seed_from_u64(7);
            (0..50).map(|_| mutate(&mut r)).collect()
        };
        let b: Vec<String> = {
            let mut r = StdRng::seed_from_u64(7);
            (0..50).map(|_| mutate(&mut r)).collect()
        };
        assert_eq!(a, b);
        let distinct: std::collections::BTreeSet<&String> = a.iter().collect();
        assert!(distinct.len() > 45);
    }

    /// A short run in every `cargo test`: no input panics or hangs, and
    /// the mutations reach both refusals and valid objects.
    #[test]
    fn two_thousand_mutated_manifests_neither_panic_nor_hang() {
        let r = run(2_000, 1, Duration::from_secs(2), false);
        assert!(r.failures.is_empty(), "{:?}", r.failures.first());
        assert!(r.parsed > 400, "{r:?}");
        assert!(r.valid > 40, "{r:?}");
        assert!(
            r.parsed < r.inputs,
            "some inputs must be broken YAML: {r:?}"
        );
    }
}
