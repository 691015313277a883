//! What the binaries share on the command line: parsing flags with one-line errors.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

/// A binary's `main`: keeps freed tensors for reuse ([`tweedie_core::memory`]), parses the
/// arguments ([`parse_args`]) and runs `run`; an error is one line on stderr (`error: ` and its
/// chain of causes) and exit status 1.
pub fn main<T: Parser>(run: impl FnOnce(T) -> anyhow::Result<()>) -> ExitCode {
    tweedie_core::memory::keep_freed_memory();
    match run(parse_args::<T>()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses the process's arguments into `T`. `--help` and `--version` print as clap prints them;
/// any other mistake is one line on stderr (clap's message without its usage block) and exit
/// status 2.
pub fn parse_args<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => {
            eprintln!("{}", one_line(&e.render().to_string()));
            std::process::exit(2);
        }
    }
}

/// clap's rendered error as one line: the usage block and the `--help` hint dropped, the rest
/// joined.
pub fn one_line(rendered: &str) -> String {
    rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Parser, Debug)]
    struct A {
        #[arg(long)]
        checkpoint: String,
        #[arg(long, value_parser = crate::check::finite_flag)]
        eta: Option<f64>,
    }

    #[test]
    fn clap_errors_become_one_line() {
        for (argv, want) in [
            (vec!["x"], "--checkpoint <CHECKPOINT>"),
            (vec!["x", "--checkpoint", "c", "--eta", "nan"], "not finite"),
            (vec!["x", "--checkpoint", "c", "--bogus"], "--bogus"),
        ] {
            let e = A::try_parse_from(argv).unwrap_err();
            let line = one_line(&e.render().to_string());
            assert!(line.starts_with("error: ") && line.contains(want), "{line}");
            assert!(!line.contains('\n') && !line.contains("Usage"), "{line}");
        }
    }
}
