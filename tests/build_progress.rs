//! What `kiln build` prints while it runs, as the unprivileged test user over
//! the busybox fixture: plain step lines with the commands' own output
//! indented under them, step times, CACHED on a rebuild and a summary; json
//! events; `-q`; a failed RUN's line, command and exit code; the tty live
//! view on a real pseudo-terminal.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::run_step::{Kiln, Tier};
use crate::support::tools;

fn rootless() -> Kiln {
    let tier = if Tier::available().contains(&Tier::Subuid) {
        Tier::Subuid
    } else {
        Tier::Single
    };
    let kiln = Kiln::new(tier);
    kiln.import_busybox("base");
    kiln
}

/// A context directory with this Dockerfile, owned by the test user.
fn context(kiln: &Kiln, name: &str, dockerfile: &str) -> PathBuf {
    let dir = kiln.subdir(name);
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    kiln.user.own(&dir);
    dir
}

fn build_command(kiln: &Kiln, args: &[&str], ctx: &Path) -> Command {
    let mut c = kiln.command(&["build"]);
    c.args(args).arg(ctx);
    c
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `kiln build` that must succeed: (stdout trimmed, stderr).
fn build(kiln: &Kiln, args: &[&str], ctx: &Path) -> (String, String) {
    let out = tools::run(&mut build_command(kiln, args, ctx));
    (text(&out.stdout).trim().to_string(), text(&out.stderr))
}

/// `kiln build` that must fail.
fn build_failing(kiln: &Kiln, args: &[&str], ctx: &Path) -> Output {
    let out = build_command(kiln, args, ctx).output().unwrap();
    assert!(
        !out.status.success(),
        "the build succeeded:\n{}",
        text(&out.stderr)
    );
    out
}

/// The result word after `--> ` of each step, in order.
fn results(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("--> "))
        .map(str::to_string)
        .collect()
}

/// `DONE 0.12s` / `DONE 12.3s` / `DONE 2m05s`.
fn is_done_with_time(result: &str) -> bool {
    let Some(t) = result.strip_prefix("DONE ") else {
        return false;
    };
    let t = t.strip_suffix('s').unwrap_or("");
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == 'm')
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
}

const CHATTY: &str = "FROM base
RUN echo out-line && echo err-line >&2 && printf no-newline
RUN seq 1 100000
ENV X=1
";

#[test]
fn build_plain_progress_shows_steps_indented_output_times_cached_and_summary() {
    let kiln = rootless();
    let ctx = context(&kiln, "ctx", CHATTY);
    let (id, err) = build(&kiln, &["--progress=plain", "-t", "p:1"], &ctx);
    assert!(id.starts_with("sha256:"), "{id}");
    let lines: Vec<&str> = err.lines().collect();
    let step = |n: usize, text: &str| format!("[1/1] STEP {n}/4: {text}");
    for (n, t) in [
        (1, "FROM base"),
        (
            2,
            "RUN echo out-line && echo err-line >&2 && printf no-newline",
        ),
        (3, "RUN seq 1 100000"),
        (4, "ENV X=1"),
    ] {
        assert!(
            lines.contains(&step(n, t).as_str()),
            "no {t:?} line:\n{err}"
        );
    }
    // stdout and stderr of the command, indented, in order, under its step;
    // an unfinished last line ends with the command.
    let at = |l: &str| lines.iter().position(|x| *x == l);
    let s2 = at(&step(2, CHATTY.lines().nth(1).unwrap())).unwrap();
    assert_eq!(
        &lines[s2 + 1..s2 + 4],
        ["    out-line", "    err-line", "    no-newline"],
        "{err}"
    );
    // A command that writes far more than a pipe holds: every line arrives.
    let s3 = at(&step(3, "RUN seq 1 100000")).unwrap();
    assert_eq!(lines[s3 + 1], "    1");
    assert_eq!(lines[s3 + 100000], "    100000");
    assert!(
        lines[s3 + 100001].starts_with("--> DONE"),
        "{}",
        lines[s3 + 100001]
    );
    let done = results(&err);
    assert_eq!(done.len(), 4, "{done:?}");
    assert!(done.iter().all(|r| is_done_with_time(r)), "{done:?}");
    // The summary names the image the build printed on stdout.
    assert!(err.contains(&format!("  image id: {id}")), "{err}");
    assert!(err.contains("  digest:   sha256:"), "{err}");
    assert!(err.contains("  size:     "), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  named:") && l.ends_with("p:1")),
        "{err}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Built in ") && l.ends_with(": 3 steps run, 0 cached")),
        "{err}"
    );

    // Rebuilt: every step after FROM comes from the cache, no command runs.
    let (id2, err) = build(&kiln, &["--progress=plain", "-t", "p:2"], &ctx);
    assert_eq!(id, id2);
    let done = results(&err);
    assert_eq!(done.len(), 4, "{err}");
    assert!(is_done_with_time(&done[0]), "{err}");
    assert!(done[1..].iter().all(|r| r == "CACHED"), "{err}");
    assert!(!err.contains("    out-line"), "a cached RUN ran:\n{err}");
    assert!(err.contains(": 0 steps run, 3 cached\n"), "{err}");
}

fn json_events(stderr: &str) -> Vec<serde_json::Value> {
    stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{stderr}"))
        })
        .collect()
}

#[test]
fn build_json_progress_is_one_event_per_line() {
    let kiln = rootless();
    let ctx = context(
        &kiln,
        "ctx",
        "FROM base\nRUN echo out-line && echo err-line >&2\nENV X=1\n",
    );
    let (id, err) = build(&kiln, &["--progress=json", "-t", "j:1"], &ctx);
    let events = json_events(&err);
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["step", "done", "step", "output", "output", "done", "step", "done", "image"],
        "{err}"
    );
    assert!(events.iter().all(|e| e["time"].as_f64().is_some()), "{err}");
    assert_eq!(events[2]["text"], "RUN echo out-line && echo err-line >&2");
    assert_eq!(events[2]["step"], 2);
    assert_eq!(events[2]["steps"], 3);
    assert_eq!(events[3]["line"], "out-line");
    assert_eq!(events[4]["line"], "err-line");
    assert_eq!(events[5]["cached"], false);
    assert!(events[5]["seconds"].as_f64().unwrap() > 0.0);
    let image = &events[8];
    assert_eq!(image["id"], id.as_str());
    assert!(image["digest"].as_str().unwrap().starts_with("sha256:"));
    assert!(image["size"].as_u64().unwrap() > 0);
    assert!(
        image["names"][0].as_str().unwrap().ends_with("j:1"),
        "{image}"
    );

    // A failure is an event too, and every line is still JSON.
    let bad = context(&kiln, "bad", "FROM base\nRUN echo x && exit 5\n");
    let out = build_failing(&kiln, &["--progress=json"], &bad);
    let err = text(&out.stderr);
    let (events, rest): (Vec<&str>, Vec<&str>) = err.lines().partition(|l| l.starts_with('{'));
    let events = json_events(&events.join("\n"));
    let failed = events
        .iter()
        .find(|e| e["event"] == "failed")
        .unwrap_or_else(|| panic!("no failed event:\n{err}"));
    assert_eq!(failed["exit_code"], 5);
    assert_eq!(failed["text"], "RUN echo x && exit 5");
    assert!(failed["at"].as_str().unwrap().ends_with("Dockerfile:2:1"));
    assert_eq!(events.last().unwrap()["event"], "error", "{err}");
    // Besides the events, only kiln's own error lines.
    assert!(rest.iter().all(|l| l.starts_with("error: ")), "{err}");
}

#[test]
fn build_failing_run_prints_its_line_command_output_and_exit_code() {
    let kiln = rootless();
    let df = "FROM base\nRUN echo first > /first\nRUN echo before-fail && exit 7\n";
    let ctx = context(&kiln, "ctx", df);
    let out = build_failing(&kiln, &["--progress=plain", "-t", "bad:1"], &ctx);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(err.contains("    before-fail\n"), "{err}");
    let want = "--> ERROR: ";
    let line = err
        .lines()
        .find(|l| l.starts_with(want))
        .unwrap_or_else(|| panic!("no {want:?} line:\n{err}"));
    assert!(line.contains("Dockerfile:3:1"), "{line}");
    assert!(line.contains("RUN echo before-fail && exit 7"), "{line}");
    assert!(line.ends_with("exit code 7"), "{line}");
    assert!(err.contains("the command exited with code 7"), "{err}");

    // Quiet: no progress, but the failed command's last output lines.
    let out = build_failing(&kiln, &["-q", "-t", "bad:1"], &ctx);
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(!err.contains("STEP"), "{err}");
    assert!(err.contains("    before-fail\n"), "{err}");
    assert!(err.contains("Dockerfile:3:1"), "{err}");

    // The store is consistent and kept the step that worked.
    tools::run(&mut kiln.command(&["system", "check"]));
    let images = tools::run_stdout(&mut kiln.command(&["images"]));
    assert!(!images.contains("bad"), "{images}");
    let fixed = context(&kiln, "fixed", &df.replace("exit 7", "true"));
    let (_, err) = build(&kiln, &["--progress=plain"], &fixed);
    assert_eq!(results(&err)[1], "CACHED", "{err}");
}

#[test]
fn build_quiet_prints_only_the_image_id() {
    let kiln = rootless();
    let ctx = context(&kiln, "ctx", "FROM base\nRUN echo hidden-line\n");
    let out = tools::run(&mut build_command(&kiln, &["-q", "-t", "q:1"], &ctx));
    let stdout = text(&out.stdout);
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(
        lines[0].starts_with("sha256:") && lines[0].len() == 71,
        "{stdout}"
    );
    let inspect = tools::run_stdout(&mut kiln.command(&["inspect", "q:1"]));
    let v: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(v[0]["Id"].as_str().unwrap(), lines[0], "{inspect}");
}

/// `cmd` on a pseudo-terminal (`script`): what the terminal received.
fn on_pty(cmd: &Command) -> Output {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let line: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(quote)
        .collect();
    let mut script = Command::new(tools::require("script"));
    script
        .args(["-qefc", &line.join(" "), "/dev/null"])
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::null());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => script.env(k, v),
            None => script.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    script.output().unwrap()
}

#[test]
fn build_tty_progress_draws_a_live_view_on_a_terminal() {
    let kiln = rootless();
    let ctx = context(
        &kiln,
        "ctx",
        "FROM base\nRUN echo live-line && sleep 1\nENV X=1\n",
    );
    // auto is the live view on a terminal.
    let out = on_pty(&build_command(&kiln, &["-t", "t:1"], &ctx));
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // Finished steps stay, one line each, with their result.
    assert!(
        screen.contains("[1/1] STEP 2/3: RUN echo live-line && sleep 1  DONE "),
        "{screen}"
    );
    assert!(
        screen.contains("[1/1] STEP 3/3: ENV X=1  DONE "),
        "{screen}"
    );
    // The command's output was drawn live under its step (not as a plain
    // indented line), with cursor movement redrawing the view.
    assert!(screen.contains("live-line"), "{screen}");
    assert!(!screen.contains("\n    live-line\r\n"), "{screen}");
    assert!(screen.contains("\x1b["), "no terminal control:\n{screen}");
    // The summary, then the id alone on stdout.
    let (_, after) = screen.split_once("  image id: ").expect(&screen);
    let id = after.split_whitespace().next().unwrap();
    assert!(id.starts_with("sha256:"), "{screen}");
    assert!(screen.trim_end().ends_with(id), "{screen}");

    // A failed command: its step marked, its last output lines boxed.
    let bad = context(&kiln, "bad", "FROM base\nRUN echo last-words && exit 4\n");
    let out = on_pty(&build_command(&kiln, &[], &bad));
    let screen = text(&out.stdout);
    assert!(!out.status.success(), "{screen}");
    assert!(
        screen.contains("[1/1] STEP 2/2: RUN echo last-words && exit 4  ERROR"),
        "{screen}"
    );
    assert!(screen.contains("    last-words\r\n------"), "{screen}");
    assert!(screen.contains("code 4"), "{screen}");

    // Not a terminal: --progress=tty falls back to plain lines.
    let (_, err) = build(&kiln, &["--progress=tty", "--no-cache"], &ctx);
    assert!(err.contains("\n    live-line\n"), "{err}");
    assert!(!err.contains('\x1b'), "{err}");
}

/// Processes whose command line is exactly `argv`.
fn processes(argv: &[&str]) -> Vec<String> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let mut found = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(e.path().join("cmdline")) {
            if cmdline == want {
                found.push(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
fn build_interrupted_like_ctrl_c_leaves_no_process_of_the_step() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let kiln = rootless();
    // A duration no other test uses, to find this step's process.
    let secs = format!("{}", 900_000 + std::process::id() % 100_000);
    let df = format!("FROM base\nRUN echo started && sleep {secs}\n");
    let ctx = context(&kiln, "ctx", &df);
    let mut cmd = build_command(&kiln, &["--progress=plain"], &ctx);
    // Its own process group, as a shell gives a foreground job.
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) if l == "    started" => break,
            Ok(_) => {}
            Err(e) => panic!("the step did not start: {e}"),
        }
    }
    // `sleep` starts just after the echo.
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes(&["sleep", &secs]).is_empty() {
        assert!(Instant::now() < deadline, "the step's sleep never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Ctrl-C: SIGINT to the whole foreground group.
    let group = format!("-{}", child.id());
    tools::run(Command::new("kill").args(["-INT", "--", &group]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "kiln did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes(&["sleep", &secs]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the step's command outlived kiln"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    tools::run(&mut kiln.command(&["system", "check"]));
}

#[test]
fn build_push_shows_blob_transfers_in_the_live_view_and_as_plain_lines() {
    let reg = crate::support::registry::Registry::start();
    let kiln = rootless();
    let ctx = context(&kiln, "ctx", "FROM base\nRUN echo pushed > /f\n");
    let name = format!("{}/progress/tty:1", reg.addr());
    let out = on_pty(&build_command(&kiln, &["--push", "-t", &name], &ctx));
    let screen = text(&out.stdout);
    assert!(out.status.success(), "{screen}");
    // Bars for the blobs, drawn with the live view and ended with their
    // outcome; the push is among the summary's outputs.
    assert!(screen.contains("Copying blob sha256:"), "{screen}");
    assert!(screen.contains(" done"), "{screen}");
    assert!(
        screen.contains(&format!("  output:   pushed {name}@sha256:")),
        "{screen}"
    );
    // Plain: one line per blob.
    let name2 = format!("{}/progress/plain:1", reg.addr());
    let (_, err) = build(&kiln, &["--progress=plain", "--push", "-t", &name2], &ctx);
    let copied: Vec<&str> = err.lines().filter(|l| l.starts_with("Copying ")).collect();
    assert!(copied.len() >= 2, "{err}");
    assert!(!err.contains('\x1b'), "{err}");
    // json: an event per blob, every line still JSON.
    let name3 = format!("{}/progress/json:1", reg.addr());
    let (_, err) = build(&kiln, &["--progress=json", "--push", "-t", &name3], &ctx);
    let blobs: Vec<serde_json::Value> = json_events(&err)
        .into_iter()
        .filter(|e| e["event"] == "blob")
        .collect();
    assert!(blobs.len() >= 2, "{err}");
    for b in &blobs {
        assert!(b["digest"].as_str().unwrap().starts_with("sha256:"), "{b}");
        assert!(b["size"].as_u64().unwrap() > 0, "{b}");
    }
}
