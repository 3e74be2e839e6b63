//! The configuration file (`--config FILE` or `TRIAGE_CONFIG`): TOML with the long names of the
//! command-line options, global ones at the top and a command's own in a table named after it:
//!
//! ```toml
//! data-dir = "/srv/triage"
//! max-tokens = 128
//! [serve]
//! bind = "0.0.0.0:8080"
//! api-keys-file = "/etc/triage/keys"
//! ```
//!
//! Flags win over the environment and the environment over the file: each entry becomes the
//! option's environment variable unless that is already set, so clap does the rest and every
//! option documented in `--help` can be put in the file without a second list of them here.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where the configuration file is, if any: `--config FILE`, `--config=FILE` or `TRIAGE_CONFIG`.
pub fn config_path(args: &[String]) -> Option<PathBuf> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("TRIAGE_CONFIG").map(PathBuf::from)
}

/// Reads the file and sets the environment variables it implies. Call before parsing the
/// command line and before any thread starts (the environment is process-wide).
pub fn apply(command: &clap::Command, path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the configuration file {}", path.display()))?;
    let vars = environment(command, &text)
        .with_context(|| format!("in the configuration file {}", path.display()))?;
    for (name, value) in vars {
        if std::env::var_os(&name).is_none() {
            std::env::set_var(name, value);
        }
    }
    Ok(())
}

/// The environment variables (name → value) that a configuration text stands for.
pub fn environment(command: &clap::Command, text: &str) -> Result<BTreeMap<String, String>> {
    let table: toml::Table = text.parse().context("not valid TOML")?;
    let mut vars = BTreeMap::new();
    for (key, value) in &table {
        match value {
            toml::Value::Table(entries) => {
                let Some(sub) = command.find_subcommand(key) else {
                    bail!("[{key}] is not a command of `triage`");
                };
                for (key, value) in entries {
                    let (name, value) = entry(sub, key, value)
                        .or_else(|_| entry(command, key, value))
                        .with_context(|| format!("in [{}]", sub.get_name()))?;
                    vars.insert(name, value);
                }
            }
            _ => {
                let (name, value) = entry(command, key, value)?;
                vars.insert(name, value);
            }
        }
    }
    Ok(vars)
}

/// One `option = value` entry: the option's environment variable and the value as text.
fn entry(command: &clap::Command, key: &str, value: &toml::Value) -> Result<(String, String)> {
    let long = key.replace('_', "-");
    let arg = command
        .get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
        .with_context(|| format!("unknown option {key:?} (see `triage --help`)"))?;
    let Some(name) = arg.get_env() else {
        bail!("option {key:?} cannot be set from the configuration file");
    };
    let value = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            value.to_string()
        }
        // Lists, e.g. API keys, are comma-separated in their environment variable.
        toml::Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .collect::<Vec<_>>()
            .join(","),
        _ => bail!("option {key:?}: unsupported value {value}"),
    };
    Ok((name.to_string_lossy().into_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn command() -> Command {
        Command::new("triage")
            .arg(
                Arg::new("data_dir")
                    .long("data-dir")
                    .env("TRIAGE_DATA_DIR")
                    .global(true),
            )
            .arg(
                Arg::new("max_tokens")
                    .long("max-tokens")
                    .env("TRIAGE_MAX_TOKENS"),
            )
            .arg(Arg::new("verbose").long("verbose"))
            .subcommand(
                Command::new("serve")
                    .arg(Arg::new("bind").long("bind").env("TRIAGE_BIND"))
                    .arg(Arg::new("keys").long("api-keys").env("TRIAGE_API_KEYS"))
                    .arg(
                        Arg::new("no_draft")
                            .long("no-draft")
                            .env("TRIAGE_NO_DRAFT")
                            .action(ArgAction::SetTrue),
                    ),
            )
    }

    #[test]
    fn entries_become_the_options_environment_variables() {
        let vars = environment(
            &command(),
            r#"
            data_dir = "/srv/triage"
            max-tokens = 256
            [serve]
            bind = "0.0.0.0:8080"
            api-keys = ["admin:0123456789abcdef", "call-taker:fedcba9876543210"]
            no-draft = true
            "#,
        )
        .unwrap();
        let expected = [
            (
                "TRIAGE_API_KEYS",
                "admin:0123456789abcdef,call-taker:fedcba9876543210",
            ),
            ("TRIAGE_BIND", "0.0.0.0:8080"),
            ("TRIAGE_DATA_DIR", "/srv/triage"),
            ("TRIAGE_MAX_TOKENS", "256"),
            ("TRIAGE_NO_DRAFT", "true"),
        ];
        let got: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn global_options_may_sit_in_a_command_table() {
        let vars = environment(&command(), "[serve]\ndata-dir = \"/d\"").unwrap();
        assert_eq!(vars["TRIAGE_DATA_DIR"], "/d");
    }

    #[test]
    fn mistakes_are_named() {
        let error = |text| format!("{:#}", environment(&command(), text).unwrap_err());
        assert!(error("bnid = 1").contains("unknown option \"bnid\""));
        assert!(error("[srve]\nbind = 1").contains("[srve] is not a command"));
        assert!(error("verbose = true").contains("cannot be set from the configuration file"));
        assert!(error("data-dir = ").contains("not valid TOML"));
        assert!(error("[serve]\nbnid = 1").contains("in [serve]"));
    }

    #[test]
    fn finds_the_path_in_either_flag_form() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["triage", "--config", "a.toml", "serve"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["triage", "serve", "--config=b.toml"])),
            Some(PathBuf::from("b.toml"))
        );
    }
}
