//! `--train-config FILE.json`: a subcommand's options kept in a file. Every key the file holds
//! and the command line does not becomes `--key value` (the command line wins), so the file and
//! the flags mean the same thing and clap checks both the same way.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

const FLAG: &str = "--train-config";

/// `argv` with the options of the `--train-config` file appended, if one is named.
pub fn expand(argv: Vec<OsString>, command: &clap::Command) -> Result<Vec<OsString>> {
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let file = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix(FLAG) {
            Some("") => args.get(i + 1).cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        });
    let Some(file) = file else { return Ok(argv) };
    let Some(sub) = command
        .get_subcommands()
        .find(|s| args.iter().any(|a| a == s.get_name()))
    else {
        return Ok(argv);
    };
    let path = Path::new(&file);
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let Value::Object(options) = json else {
        bail!("{}: expected a JSON object of options", path.display())
    };
    let known: Vec<&str> = sub.get_arguments().filter_map(|a| a.get_long()).collect();
    let mut out = argv;
    for (key, value) in options {
        let name = key.replace('_', "-");
        if !known.contains(&name.as_str()) || name == FLAG[2..] {
            bail!(
                "{}: unknown option {key:?} for `ptm {}`",
                path.display(),
                sub.get_name()
            );
        }
        let flag = format!("--{name}");
        if args
            .iter()
            .any(|a| *a == flag || a.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        let scalar = |v: &Value| -> Result<String> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                other => bail!(
                    "{}: option {key:?} has the value {other}; expected a string or number",
                    path.display()
                ),
            }
        };
        match &value {
            Value::Null | Value::Bool(false) => {}
            Value::Bool(true) => out.push(flag.into()),
            Value::Array(items) => {
                out.push(flag.into());
                for item in items {
                    out.push(scalar(item)?.into());
                }
            }
            v => {
                out.push(flag.into());
                out.push(scalar(v)?.into());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    #[test]
    fn file_options_fill_in_and_the_command_line_wins() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("run.json");
        std::fs::write(&f, r#"{"batch_size": 8, "lr": 0.001, "train": ["a.txt", "b.txt"], "objective": "mlm+nsp"}"#).unwrap();
        let argv: Vec<OsString> = [
            "ptm",
            "pretrain",
            "--train-config",
            f.to_str().unwrap(),
            "--lr",
            "0.5",
            "--output",
            "o",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out = strings(expand(argv, &crate::Cli::command()).unwrap());
        let tail = out[8..].join(" ");
        assert!(
            tail.contains("--batch-size 8")
                && tail.contains("--train a.txt b.txt")
                && tail.contains("--objective mlm+nsp"),
            "{tail}"
        );
        assert!(!tail.contains("--lr"), "{tail}");

        std::fs::write(&f, r#"{"bacth_size": 8}"#).unwrap();
        let argv: Vec<OsString> = [
            "ptm",
            "pretrain",
            &format!("--train-config={}", f.display()),
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let err = expand(argv, &crate::Cli::command())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("run.json") && err.contains("bacth_size"),
            "{err}"
        );
    }
}
