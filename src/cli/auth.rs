//! `distcron token create|list|revoke` and `distcron user add`: manage
//! credentials straight in the coordinator, etcd (`--store etcd`, reading
//! the manager's configuration) or the embedded store of a stopped
//! standalone (`--store embedded`, the default, reading its `dataDir`).
//! The same operations are the admin API's `/auth/tokens` endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{CliError, EXIT_USAGE};
use crate::auth::tokens::{self, NewToken};
use crate::auth::{Role, users};
use crate::config::{self, Role as ConfigRole};
use crate::coord::Coordinator;

pub const TOKEN_USAGE: &str = "usage:
  distcron token create --role admin|operator|viewer --name NAME [--group G] [--expires 30d]
  distcron token list
  distcron token revoke ID
  distcron user add NAME --role admin|operator|viewer [--group G] [--password-file F]
each takes --store embedded|etcd (default embedded) and configuration flags (--config FILE,
--data-dir DIR, --etcd-endpoints ...); user add reads the password from stdin without --password-file";

/// `distcron token ...`: each verb takes its options and configuration
/// flags as they come (parsed below, so the documented flags stay as they
/// are); `--help` on each shows them.
#[derive(clap::Subcommand, Debug)]
#[command(after_help = TOKEN_USAGE)]
pub enum TokenCommand {
    /// Create a token: --role admin|operator|viewer --name NAME [--group G] [--expires 30d]; printed once.
    #[command(after_help = TOKEN_USAGE)]
    Create(Raw),
    /// List tokens (never their secrets).
    #[command(after_help = TOKEN_USAGE)]
    List(Raw),
    /// Revoke a token by ID.
    #[command(after_help = TOKEN_USAGE)]
    Revoke(Raw),
}

#[derive(clap::Subcommand, Debug)]
pub enum UserCommand {
    /// Add a console user: NAME --role R [--group G] [--password-file F] (else the password from stdin).
    #[command(after_help = TOKEN_USAGE)]
    Add(Raw),
}

/// A verb's words and flags, as given.
#[derive(clap::Args, Debug)]
pub struct Raw {
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub args: Vec<String>,
}

impl TokenCommand {
    /// The verb and its arguments, as [`token_command`] reads them.
    pub fn argv(&self) -> Vec<String> {
        let (verb, raw) = match self {
            TokenCommand::Create(raw) => ("create", raw),
            TokenCommand::List(raw) => ("list", raw),
            TokenCommand::Revoke(raw) => ("revoke", raw),
        };
        std::iter::once(verb.to_string())
            .chain(raw.args.iter().cloned())
            .collect()
    }
}

impl UserCommand {
    pub fn argv(&self) -> Vec<String> {
        let UserCommand::Add(raw) = self;
        std::iter::once("add".to_string())
            .chain(raw.args.iter().cloned())
            .collect()
    }
}

fn usage(message: impl Into<String>) -> CliError {
    CliError {
        code: EXIT_USAGE,
        message: message.into(),
    }
}

fn failed(message: impl Into<String>) -> CliError {
    CliError {
        code: 1,
        message: message.into(),
    }
}

/// The command's own options, the positional words, and the rest (config flags).
struct Parsed {
    options: BTreeMap<&'static str, String>,
    words: Vec<String>,
    config_args: Vec<String>,
}

fn parse(args: &[String], own: &[&'static str]) -> Result<Parsed, CliError> {
    let mut parsed = Parsed {
        options: BTreeMap::new(),
        words: Vec::new(),
        config_args: Vec::new(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--") else {
            parsed.words.push(arg.clone());
            continue;
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        match own.iter().find(|o| **o == name) {
            Some(known) => {
                let value = inline
                    .or_else(|| iter.next().cloned())
                    .ok_or_else(|| usage(format!("--{name} needs a value")))?;
                parsed.options.insert(known, value);
            }
            None => {
                parsed.config_args.push(arg.clone());
                if inline.is_none() && name != "print-config" {
                    parsed.config_args.extend(iter.next().cloned());
                }
            }
        }
    }
    Ok(parsed)
}

fn role_of(text: Option<&String>) -> Result<Role, CliError> {
    let text = text.ok_or_else(|| usage("--role is required (admin, operator or viewer)"))?;
    Role::parse(text)
        .ok_or_else(|| usage(format!("--role: '{text}' is not admin, operator or viewer")))
}

/// Open the store the command acts on.
async fn open_store(parsed: &Parsed) -> Result<Arc<dyn Coordinator>, CliError> {
    let store = parsed
        .options
        .get("store")
        .map(String::as_str)
        .unwrap_or("embedded");
    let env = config::process_env();
    match store {
        "embedded" => {
            let loaded = config::load(ConfigRole::Standalone, &parsed.config_args, &env)
                .map_err(|e| usage(e.to_string()))?;
            let path = config::data_path(&loaded.config, "coordinator.redb");
            crate::datadir::prepare(std::path::Path::new(&loaded.config.data_dir))
                .map_err(|e| failed(format!("dataDir: {e}")))?;
            let coord = crate::coord::embedded::EmbeddedCoordinator::open(&path).map_err(|e| {
                failed(format!(
                    "{}: {e} (a running standalone holds its store: use the API's /auth/tokens, or stop it)",
                    path.display()
                ))
            })?;
            Ok(Arc::new(coord))
        }
        "etcd" => {
            let loaded = config::load(ConfigRole::Manager, &parsed.config_args, &env)
                .map_err(|e| usage(e.to_string()))?;
            let coord =
                crate::coord::etcd::EtcdCoordinator::connect(config::etcd_options(&loaded.config))
                    .await
                    .map_err(|e| failed(format!("etcdEndpoints: {e}")))?;
            Ok(Arc::new(coord))
        }
        other => Err(usage(format!("--store: '{other}' is not embedded or etcd"))),
    }
}

/// `distcron token ...`: the lines to print.
pub async fn token_command(args: &[String], now_ms: i64) -> Result<Vec<String>, CliError> {
    let Some((verb, rest)) = args.split_first() else {
        return Err(usage(TOKEN_USAGE));
    };
    let parsed = parse(rest, &["store", "role", "name", "group", "expires"])?;
    match verb.as_str() {
        "create" => {
            let request = NewToken {
                name: parsed
                    .options
                    .get("name")
                    .cloned()
                    .ok_or_else(|| usage("--name is required"))?,
                role: role_of(parsed.options.get("role"))?,
                group: parsed.options.get("group").cloned(),
                expires: parsed.options.get("expires").cloned(),
            };
            let coord = open_store(&parsed).await?;
            let created = tokens::create(&*coord, &request, "cli", now_ms)
                .await
                .map_err(|e| usage(e.to_string()))?;
            Ok(vec![
                created.token,
                format!(
                    "# id {} ({}, role {}); shown once: store it now",
                    created.record.id,
                    created.record.name,
                    created.record.role.as_str()
                ),
            ])
        }
        "list" => {
            let coord = open_store(&parsed).await?;
            let list = tokens::list(&*coord)
                .await
                .map_err(|e| failed(e.to_string()))?;
            let mut lines = vec!["ID\tNAME\tROLE\tGROUP\tEXPIRES".to_string()];
            for t in list {
                let expires = t.expires_at.map_or("never".into(), |ms| {
                    chrono::DateTime::from_timestamp_millis(ms)
                        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                        .unwrap_or_default()
                });
                lines.push(format!(
                    "{}\t{}\t{}\t{}\t{}",
                    t.id,
                    t.name,
                    t.role.as_str(),
                    t.group.as_deref().unwrap_or("*"),
                    expires
                ));
            }
            Ok(lines)
        }
        "revoke" => {
            let [id] = parsed.words.as_slice() else {
                return Err(usage("token revoke takes one token ID (see token list)"));
            };
            let coord = open_store(&parsed).await?;
            let revoked = tokens::revoke(&*coord, id)
                .await
                .map_err(|e| failed(e.to_string()))?;
            Ok(vec![format!("revoked {} ({})", revoked.id, revoked.name)])
        }
        _ => Err(usage(TOKEN_USAGE)),
    }
}

/// `distcron user add NAME --role R [--group G] [--password-file F]`.
pub async fn user_command(
    args: &[String],
    stdin_password: impl FnOnce() -> std::io::Result<String>,
    now_ms: i64,
) -> Result<Vec<String>, CliError> {
    let Some(("add", rest)) = args.split_first().map(|(v, r)| (v.as_str(), r)) else {
        return Err(usage(TOKEN_USAGE));
    };
    let parsed = parse(rest, &["store", "role", "group", "password-file"])?;
    let [name] = parsed.words.as_slice() else {
        return Err(usage("user add takes one user NAME"));
    };
    let role = role_of(parsed.options.get("role"))?;
    let password = match parsed.options.get("password-file") {
        Some(file) => std::fs::read_to_string(file)
            .map_err(|e| usage(format!("--password-file: cannot read {file}: {e}")))?,
        None => stdin_password().map_err(|e| usage(format!("password from stdin: {e}")))?,
    };
    let password = password.lines().next().unwrap_or("").to_string();
    let coord = open_store(&parsed).await?;
    let user = users::add(
        &*coord,
        name,
        &password,
        role,
        parsed.options.get("group").cloned(),
        now_ms,
    )
    .await
    .map_err(|e| usage(e.to_string()))?;
    Ok(vec![format!(
        "user {} saved (role {})",
        user.name,
        user.role.as_str()
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn create_list_revoke_on_the_embedded_store() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let data = data.to_str().unwrap();
        let out = token_command(
            &args(&[
                "create",
                "--role",
                "operator",
                "--name",
                "ci",
                "--data-dir",
                data,
            ]),
            0,
        )
        .await
        .unwrap();
        assert!(out[0].starts_with("dct_"), "{out:?}");
        let list = token_command(&args(&["list", "--data-dir", data]), 0)
            .await
            .unwrap();
        assert_eq!(list.len(), 2, "{list:?}");
        assert!(list[1].contains("\tci\toperator\t*\tnever"), "{list:?}");
        let id = list[1].split('\t').next().unwrap().to_string();
        let out = token_command(&args(&["revoke", &id, "--data-dir", data]), 0)
            .await
            .unwrap();
        assert_eq!(out, [format!("revoked {id} (ci)")]);
        let list = token_command(&args(&["list", "--data-dir", data]), 0)
            .await
            .unwrap();
        assert_eq!(list.len(), 1);
    }

    #[tokio::test]
    async fn usage_errors_name_the_problem() {
        let err = token_command(&args(&["create", "--name", "x"]), 0)
            .await
            .unwrap_err();
        assert_eq!(err.code, EXIT_USAGE);
        assert!(
            err.message.starts_with("--role is required"),
            "{}",
            err.message
        );
        let err = token_command(&args(&["create", "--role", "root", "--name", "x"]), 0)
            .await
            .unwrap_err();
        assert!(err.message.starts_with("--role: 'root'"));
        let err = token_command(&args(&["revoke"]), 0).await.unwrap_err();
        assert!(err.message.contains("one token ID"));
    }

    #[tokio::test]
    async fn user_add_reads_the_password_from_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = user_command(
            &args(&[
                "add",
                "alice",
                "--role",
                "viewer",
                "--data-dir",
                data.to_str().unwrap(),
            ]),
            || Ok("a long enough password\n".into()),
            0,
        )
        .await
        .unwrap();
        assert_eq!(out, ["user alice saved (role viewer)"]);
        let err = user_command(
            &args(&[
                "add",
                "bob",
                "--role",
                "viewer",
                "--data-dir",
                data.to_str().unwrap(),
            ]),
            || Ok("short".into()),
            0,
        )
        .await
        .unwrap_err();
        assert!(err.message.starts_with("password:"), "{}", err.message);
    }
}
