//! External tools the integration tests drive: finding them, running them,
//! and a free loopback port for servers they start.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Debian package that ships `tool`, when it differs from the tool's name.
fn debian_package(tool: &str) -> Option<&'static str> {
    match tool {
        "busybox" => Some("busybox-static"),
        "newuidmap" | "newgidmap" => Some("uidmap"),
        "setpriv" | "flock" => Some("util-linux"),
        "useradd" => Some("passwd"),
        "getent" => Some("libc-bin"),
        _ => None,
    }
}

/// The message every "tool is missing" failure carries.
pub fn install_hint(tool: &str) -> String {
    let mut hint = format!("{tool} not found: run scripts/install-test-deps.sh as root");
    if let Some(package) = debian_package(tool) {
        hint.push_str(&format!(" (Debian package {package})"));
    }
    hint
}

/// Where `tool` lives: the first executable file named `tool` in `PATH`,
/// then in `/usr/sbin` and `/sbin` (often missing from a user's `PATH`).
/// `None` when there is none.
pub fn find(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The absolute path of `tool`; panics with [`install_hint`] when it is missing,
/// so a test that needs the tool fails instead of silently passing.
pub fn require(tool: &str) -> PathBuf {
    find(tool).unwrap_or_else(|| panic!("{}", install_hint(tool)))
}

/// `cmd` as a shell-like line (program, arguments, and any working directory
/// or environment it sets), for failure messages.
pub fn describe(cmd: &Command) -> String {
    let quote = |s: &OsStr| {
        let s = s.to_string_lossy();
        let plain = !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
        if plain {
            s.into_owned()
        } else {
            format!("'{}'", s.replace('\'', r"'\''"))
        }
    };
    let mut line: Vec<String> = Vec::new();
    if let Some(dir) = cmd.get_current_dir() {
        line.push(format!("(cd {} &&", quote(dir.as_os_str())));
    }
    let envs: Vec<_> = cmd.get_envs().collect();
    if envs.iter().any(|(_, value)| value.is_none()) {
        line.push("env".to_owned());
    }
    for (key, value) in &envs {
        if value.is_none() {
            line.push(format!("-u {}", key.to_string_lossy()));
        }
    }
    for (key, value) in &envs {
        if let Some(value) = value {
            line.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    line.push(quote(cmd.get_program()));
    line.extend(cmd.get_args().map(quote));
    let mut line = line.join(" ");
    if cmd.get_current_dir().is_some() {
        line.push(')');
    }
    line
}

/// Runs `cmd` to completion with captured stdout and stderr and returns its
/// output. Panics, showing the command line, exit status, stdout and stderr,
/// when it cannot be started or exits unsuccessfully. A missing program
/// panics with [`install_hint`].
pub fn run(cmd: &mut Command) -> Output {
    let output = match cmd.output() {
        Ok(output) => output,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let program = Path::new(cmd.get_program());
            let tool = program.file_name().unwrap_or(program.as_os_str());
            panic!(
                "could not start `{}`: {err}\n{}",
                describe(cmd),
                install_hint(&tool.to_string_lossy())
            )
        }
        Err(err) => panic!("could not start `{}`: {err}", describe(cmd)),
    };
    if !output.status.success() {
        panic!(
            "`{}` failed with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
    output
}

/// [`run`], returning stdout as UTF-8 text (panics, with the command line,
/// if it is not UTF-8).
pub fn run_stdout(cmd: &mut Command) -> String {
    let output = run(cmd);
    String::from_utf8(output.stdout)
        .unwrap_or_else(|err| panic!("`{}` printed non-UTF-8 stdout: {err}", describe(cmd)))
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it
/// for a listener that is closed again before returning). Another process
/// may take it before the caller binds it: servers started on it must retry.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 for a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}
