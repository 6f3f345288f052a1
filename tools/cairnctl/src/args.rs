//! The command line, shaped like etcdctl 3.4's: global flags accepted before
//! or after the command, the same command and flag names, and positional
//! arguments checked by the commands themselves so that a missing key gets
//! etcdctl's message and exit code 128 rather than a usage error.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser, Subcommand};

use crate::go_fmt;

/// A flag error in the words cobra (etcdctl's flag parser) uses, so that
/// scripts matching on them keep working.
pub(crate) fn clap_error_text(error: &clap::Error) -> String {
    let context = |kind: ContextKind| match error.get(kind) {
        Some(ContextValue::String(text)) => Some(text.clone()),
        _ => None,
    };
    match error.kind() {
        ErrorKind::UnknownArgument => match context(ContextKind::InvalidArg) {
            Some(flag) if flag.starts_with("--") => {
                let name = flag.split('=').next().unwrap_or_default();
                format!("unknown flag: {name}")
            }
            Some(flag) if flag.starts_with('-') => {
                let short = flag.chars().nth(1).unwrap_or('-');
                format!("unknown shorthand flag: '{short}' in {flag}")
            }
            _ => first_line(error),
        },
        ErrorKind::InvalidSubcommand => match context(ContextKind::InvalidSubcommand) {
            Some(command) => format!("unknown command \"{command}\" for \"cairnctl\""),
            None => first_line(error),
        },
        ErrorKind::InvalidValue | ErrorKind::ValueValidation => {
            let flag = context(ContextKind::InvalidArg)
                .map(|arg| arg.split(' ').next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            match context(ContextKind::InvalidValue) {
                Some(value) if !value.is_empty() => {
                    let reason = std::error::Error::source(error)
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    format!("invalid argument \"{value}\" for \"{flag}\" flag: {reason}")
                }
                _ => format!("flag needs an argument: {flag}"),
            }
        }
        _ => first_line(error),
    }
}

fn first_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let line = rendered.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// A decimal integer flag, with Go's error text.
fn decimal(text: &str) -> Result<i64, String> {
    go_fmt::parse_i64(text, 10)
}

/// A command line client for etcd and cairn, compatible with etcdctl.
#[derive(Debug, Parser)]
#[command(name = "cairnctl", version, about)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// gRPC endpoints, comma-separated
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// dial timeout for client connections
    #[arg(long, global = true, default_value = "2s", value_parser = go_fmt::parse_duration)]
    pub dial_timeout: Duration,
    /// timeout for short running command (excluding dial timeout)
    #[arg(long, global = true, default_value = "5s", value_parser = go_fmt::parse_duration)]
    pub command_timeout: Duration,
    /// set the output format (simple, json, table)
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    pub write_out: String,
    /// print byte strings as hex encoded strings
    #[arg(long, global = true)]
    pub hex: bool,
    /// verify certificates of TLS-enabled secure servers using this CA bundle
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,
    /// identify secure client using this TLS certificate file
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,
    /// identify secure client using this TLS key file
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    /// username[:password] for authentication (prompt if password is not supplied)
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// password for authentication (if this option is used, --user option shouldn't include password)
    #[arg(long, global = true)]
    pub password: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Puts the given key into the store
    Put(PutArgs),
    /// Gets the key or a range of keys
    Get(GetArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(DelArgs),
    /// Txn processes all the requests in one transaction
    Txn(TxnArgs),
    /// Watches events stream on keys or prefixes
    Watch(WatchArgs),
    /// Lease related commands
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Compacts the event history in etcd
    Compaction(CompactionArgs),
    /// Membership related commands
    #[command(subcommand)]
    Member(MemberCommand),
    /// Endpoint related commands
    Endpoint(EndpointArgs),
    /// Manages etcd node snapshots
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// User related commands
    #[command(subcommand)]
    User(UserCommand),
    /// Role related commands
    #[command(subcommand)]
    Role(RoleCommand),
    /// Enable or disable authentication
    #[command(subcommand)]
    Auth(AuthCommand),
}

/// etcdctl's `--interactive`: `--interactive=false` reads a password from
/// stdin instead of prompting for it.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct Interactive {
    /// Read password from stdin instead of interactive terminal
    #[arg(long, default_value = "true", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub interactive: bool,
}

/// `user add | get | list | delete | passwd | grant-role | revoke-role`.
#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Adds a new user
    Add {
        /// <user name or user:password>
        args: Vec<String>,
        #[command(flatten)]
        interactive: Interactive,
        /// Create a user without password (CN based auth only)
        #[arg(long)]
        no_password: bool,
    },
    /// Gets detailed information of a user
    Get {
        /// <user name>
        args: Vec<String>,
    },
    /// Lists all users
    List,
    /// Deletes a user
    Delete {
        /// <user name>
        args: Vec<String>,
    },
    /// Changes password of user
    Passwd {
        /// <user name>
        args: Vec<String>,
        #[command(flatten)]
        interactive: Interactive,
    },
    /// Grants a role to a user
    GrantRole {
        /// <user name> <role name>
        args: Vec<String>,
    },
    /// Revokes a role from a user
    RevokeRole {
        /// <user name> <role name>
        args: Vec<String>,
    },
}

/// `role add | get | list | delete | grant-permission | revoke-permission`.
#[derive(Debug, Subcommand)]
pub(crate) enum RoleCommand {
    /// Adds a new role
    Add {
        /// <role name>
        args: Vec<String>,
    },
    /// Gets detailed information of a role
    Get {
        /// <role name>
        args: Vec<String>,
    },
    /// Lists all roles
    List,
    /// Deletes a role
    Delete {
        /// <role name>
        args: Vec<String>,
    },
    /// Grants a key to a role
    GrantPermission {
        /// <role name> <permission type> <key> [endkey]
        args: Vec<OsString>,
        #[command(flatten)]
        range: PermissionRange,
    },
    /// Revokes a key from a role
    RevokePermission {
        /// <role name> <key> [endkey]
        args: Vec<OsString>,
        #[command(flatten)]
        range: PermissionRange,
    },
}

/// How a permission's key names a range.
#[derive(Debug, Args, Clone, Copy)]
pub(crate) struct PermissionRange {
    /// grant a prefix permission
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub prefix: bool,
    /// grant a permission of keys that are greater than or equal to the given key using byte compare
    #[arg(long, default_value = "false", num_args = 0..=1, default_missing_value = "true",
          action = clap::ArgAction::Set)]
    pub from_key: bool,
}

/// `auth enable | disable`.
#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Enables authentication
    Enable,
    /// Disables authentication
    Disable,
}

/// `put [options] <key> <value>`; the value may come from stdin.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct PutArgs {
    /// <key> <value>
    pub args: Vec<OsString>,
    /// lease ID (in hexadecimal) to attach to the key
    #[arg(long, default_value = "0")]
    pub lease: String,
    /// return the previous key-value pair before modification
    #[arg(long)]
    pub prev_kv: bool,
    /// updates the key using its current value
    #[arg(long)]
    pub ignore_value: bool,
    /// updates the key using its current lease
    #[arg(long)]
    pub ignore_lease: bool,
}

/// `get [options] <key> [range_end]`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct GetArgs {
    /// <key> [range_end]
    pub args: Vec<OsString>,
    /// Linearizable(l) or Serializable(s)
    #[arg(long, default_value = "l")]
    pub consistency: String,
    /// Order of results; ASCEND or DESCEND (ASCEND by default)
    #[arg(long, default_value = "")]
    pub order: String,
    /// Sort target; CREATE, KEY, MODIFY, VALUE, or VERSION
    #[arg(long, default_value = "")]
    pub sort_by: String,
    /// Maximum number of results
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = decimal)]
    pub limit: i64,
    /// Get keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// Get keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
    /// Specify the kv revision
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = decimal)]
    pub rev: i64,
    /// Get only the keys
    #[arg(long)]
    pub keys_only: bool,
    /// Get only the count
    #[arg(long)]
    pub count_only: bool,
    /// Only write values when using the "simple" output format
    #[arg(long)]
    pub print_value_only: bool,
}

/// `del [options] <key> [range_end]`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct DelArgs {
    /// <key> [range_end]
    pub args: Vec<OsString>,
    /// delete keys with matching prefix
    #[arg(long)]
    pub prefix: bool,
    /// return deleted key-value pairs
    #[arg(long)]
    pub prev_kv: bool,
    /// delete keys that are greater than or equal to the given key using byte compare
    #[arg(long)]
    pub from_key: bool,
}

/// `txn [options]`: compares, success ops and failure ops from stdin.
#[derive(Debug, Args)]
pub(crate) struct TxnArgs {
    /// Input transaction in interactive mode
    #[arg(short, long)]
    pub interactive: bool,
    /// txn takes no arguments
    #[arg(hide = true)]
    pub args: Vec<OsString>,
}

/// `watch [options] [key or prefix] [range_end]`.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct WatchArgs {
    /// <key> [range_end]
    pub args: Vec<OsString>,
    /// Interactive mode
    #[arg(short, long)]
    pub interactive: bool,
    /// Watch on a prefix if prefix is set
    #[arg(long)]
    pub prefix: bool,
    /// Revision to start watching
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = decimal)]
    pub rev: i64,
    /// get the previous key-value pair before the event happens
    #[arg(long)]
    pub prev_kv: bool,
}

/// `lease <subcommand>`.
#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Creates leases
    Grant {
        /// <ttl>
        args: Vec<String>,
    },
    /// Revokes leases
    Revoke {
        /// <leaseID>
        args: Vec<String>,
    },
    /// Get lease information
    Timetolive {
        /// <leaseID>
        args: Vec<String>,
        /// Get keys attached to this lease
        #[arg(long)]
        keys: bool,
    },
    /// List all active leases
    List,
    /// Keeps leases alive (renew)
    KeepAlive {
        /// <leaseID>
        args: Vec<String>,
        /// Resets the keep-alive time to its original value and exits immediately
        #[arg(long)]
        once: bool,
    },
}

/// `compaction [options] <revision>`.
#[derive(Debug, Args)]
pub(crate) struct CompactionArgs {
    /// <revision>
    #[arg(allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// 'true' to wait for compaction to physically remove all old revisions
    #[arg(long)]
    pub physical: bool,
}

/// `member <subcommand>`.
#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// Adds a member into the cluster
    Add {
        /// <memberName>
        args: Vec<String>,
        /// comma separated peer URLs for the new member
        #[arg(long)]
        peer_urls: Option<String>,
        /// indicates if the new member is raft learner
        #[arg(long)]
        learner: bool,
    },
    /// Removes a member from the cluster
    Remove {
        /// <memberID>
        args: Vec<String>,
    },
    /// Updates a member in the cluster
    Update {
        /// <memberID>
        args: Vec<String>,
        /// comma separated peer URLs for the updated member
        #[arg(long)]
        peer_urls: Option<String>,
    },
    /// Lists all members in the cluster
    List,
    /// Promotes a non-voting member in the cluster
    Promote {
        /// <memberID>
        args: Vec<String>,
    },
}

/// `endpoint [--cluster] <subcommand>`.
#[derive(Debug, Args)]
pub(crate) struct EndpointArgs {
    /// use all endpoints from the cluster member list
    #[arg(long, global = true)]
    pub cluster: bool,
    #[command(subcommand)]
    pub command: EndpointCommand,
}

/// `endpoint` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum EndpointCommand {
    /// Prints out the status of endpoints specified in `--endpoints` flag
    Status,
    /// Checks the healthiness of endpoints specified in `--endpoints` flag
    Health,
}

/// `snapshot <subcommand>`.
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Stores an etcd node backend snapshot to a given file
    Save {
        /// <filename>
        args: Vec<OsString>,
    },
    /// Restores a fresh cairn cluster from a snapshot file (etcd's or cairn's), through one of its mvcc replicas
    Restore {
        /// <filename>
        args: Vec<OsString>,
        /// The internal gRPC address (host:port) of one cairn-mvcc replica of the cluster to restore
        #[arg(long, value_name = "HOST:PORT")]
        replica: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_restore_takes_a_file_and_the_replica_to_send_it_to() {
        let cli = Cli::try_parse_from([
            "cairnctl",
            "snapshot",
            "restore",
            "f.db",
            "--replica",
            "mvcc-1:7101",
        ])
        .expect("parses");
        match cli.command {
            Command::Snapshot(SnapshotCommand::Restore { args, replica }) => {
                assert_eq!(args, vec![OsString::from("f.db")]);
                assert_eq!(replica.as_deref(), Some("mvcc-1:7101"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from([
            "cairnctl",
            "get",
            "key",
            "--prefix",
            "--endpoints=a:1,b:2",
            "-w",
            "json",
            "--command-timeout=1s",
        ])
        .expect("parses");
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.global.write_out, "json");
        assert_eq!(cli.global.command_timeout, Duration::from_secs(1));
        let Command::Get(get) = cli.command else {
            panic!("not get");
        };
        assert!(get.prefix);
        assert_eq!(get.args, [OsString::from("key")]);
    }

    #[test]
    fn flag_errors_read_like_cobra() {
        let text = |line: &[&str]| {
            Cli::try_parse_from(line)
                .err()
                .map(|error| clap_error_text(&error))
        };
        assert_eq!(
            text(&["cairnctl", "get", "k", "--bogus"]).as_deref(),
            Some("unknown flag: --bogus")
        );
        assert_eq!(
            text(&["cairnctl", "get", "k", "--rev=abc"]).as_deref(),
            Some("invalid argument \"abc\" for \"--rev\" flag: strconv.ParseInt: parsing \"abc\": invalid syntax")
        );
        assert_eq!(
            text(&["cairnctl", "bogus"]).as_deref(),
            Some("unknown command \"bogus\" for \"cairnctl\"")
        );
    }

    #[test]
    fn endpoint_cluster_flag_on_either_side() {
        for line in [
            ["cairnctl", "endpoint", "--cluster", "status"],
            ["cairnctl", "endpoint", "status", "--cluster"],
        ] {
            let cli = Cli::try_parse_from(line).expect("parses");
            let Command::Endpoint(endpoint) = cli.command else {
                panic!("not endpoint");
            };
            assert!(endpoint.cluster);
        }
    }

    #[test]
    fn subcommand_names_match_etcdctl() {
        for line in [
            vec!["cairnctl", "lease", "keep-alive", "--once", "1"],
            vec!["cairnctl", "lease", "timetolive", "1", "--keys"],
            vec![
                "cairnctl",
                "member",
                "add",
                "n",
                "--peer-urls=http://a:1",
                "--learner",
            ],
            vec!["cairnctl", "snapshot", "save", "f.db"],
            vec!["cairnctl", "compaction", "5", "--physical"],
            vec!["cairnctl", "watch", "-i"],
            vec!["cairnctl", "txn", "-i"],
        ] {
            Cli::try_parse_from(&line).unwrap_or_else(|error| panic!("{line:?}: {error}"));
        }
    }
}
