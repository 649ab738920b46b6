//! The `kiln` binary: parse the command line, run it, print errors as a chain.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    // The sandbox process must stay single-threaded (unshare of a user
    // namespace needs it), so it is dispatched before anything else runs.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kiln::exec::SANDBOX_ARG)
    {
        let code = kiln::exec::sandbox_main();
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kiln::exec::USERNS_ARG)
    {
        let code = kiln::build::finish::helper_main();
        return ExitCode::from(u8::try_from(code).unwrap_or(255));
    }
    kiln::sys::proc::default_sigpipe();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            // Many errors inside already end with their cause's text: a
            // cause said by the line before is not said again.
            let mut said = err.to_string();
            for cause in err.chain().skip(1) {
                let text = cause.to_string();
                if !said.contains(&text) {
                    eprintln!("caused by: {text}");
                }
                said = text;
            }
            ExitCode::FAILURE
        }
    }
}
