//! Nothing of a step outlives it: background processes die with the step,
//! and SIGINT to kiln during a RUN ends the step within a second.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{snapshotters, Kiln, Tier};
use crate::support::tools;

/// Pids of processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0])).collect();
    fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

fn rootless() -> Tier {
    *Tier::available().first().unwrap()
}

#[test]
fn run_step_background_sleep_leaves_no_process() {
    let kiln = Kiln::new(rootless());
    kiln.import_busybox("base");
    let snap = snapshotters()[0];
    let started = Instant::now();
    let report = kiln.step(
        "base",
        snap,
        &[],
        "sleep 1731 >/dev/null 2>&1 & echo started > /started",
    );
    assert_eq!(report["status"], 0, "{report}");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the step waited for the sleep"
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !processes(&["sleep", "1731"]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the background sleep survived the step"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn run_step_sigint_kills_the_step_within_a_second() {
    let kiln = Kiln::new(rootless());
    kiln.import_busybox("base");
    let snap = snapshotters()[0];
    let mut child = kiln
        .step_command("base", snap, &[], "sleep 1732 & sleep 1733")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes(&["sleep", "1732"]).is_empty() || processes(&["sleep", "1733"]).is_empty() {
        assert!(Instant::now() < deadline, "the step did not start");
        assert!(child.try_wait().unwrap().is_none(), "kiln ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // setpriv execs kiln, so the child's pid is kiln's.
    tools::run(Command::new("kill").args(["-INT", &child.id().to_string()]));
    let sent = Instant::now();
    loop {
        let gone =
            processes(&["sleep", "1732"]).is_empty() && processes(&["sleep", "1733"]).is_empty();
        if gone && child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "processes of the step left 1 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn run_step_failing_command_reports_its_status() {
    let kiln = Kiln::new(rootless());
    kiln.import_busybox("base");
    let out = kiln
        .step_command("base", "walk", &["--tag", "never"], "echo oops >&2; exit 7")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let report = super::report(&out);
    assert_eq!(report["status"], 7, "{report}");
    assert!(report["digest"].is_null(), "{report}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exit code 7") && stderr.contains("exit 7"),
        "{stderr}"
    );
    // No image was named.
    let images = tools::run_stdout(&mut kiln.command(&["images"]));
    assert!(!images.contains("never"), "{images}");
}
