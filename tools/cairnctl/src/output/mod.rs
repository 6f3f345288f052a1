//! Printing answers in the format `-w` asks for. Each command hands its
//! answer to the [`Printer`]; the per-format modules turn it into bytes.

/// `-w json`.
pub(crate) mod json;
/// Cells shared by the simple and table forms.
pub(crate) mod rows;
/// `-w simple`.
pub(crate) mod simple;
/// `-w table`.
pub(crate) mod table;

use std::io::Write;

use serde::Serialize;

use crate::error::{CtlError, Exit};
use crate::model::{
    DeleteResult, EndpointHealth, EndpointStatus, LeaseGrantResult, LeaseKeepAliveResult,
    LeaseListResult, LeaseRevokeResult, LeaseTimeToLiveResult, MemberAddResult, MembersResult,
    PutResult, RangeResult, TxnResult, WatchResult,
};
use simple::SimpleOptions;

/// The output formats `-w` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Simple,
    Json,
    Table,
}

impl Format {
    /// Reads `-w`; etcdctl's `fields` and `protobuf` are not offered.
    pub(crate) fn parse(text: &str) -> Result<Self, CtlError> {
        match text {
            "simple" => Ok(Self::Simple),
            "json" => Ok(Self::Json),
            "table" => Ok(Self::Table),
            _ => Err(CtlError::new(Exit::BadFeature, "unsupported output format")),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Json => "json",
            Self::Table => "table",
        }
    }
}

/// Writes answers to stdout in one format.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Printer {
    pub format: Format,
    /// `--hex`: keys and values as `\xNN` in the simple format.
    pub hex: bool,
}

impl Printer {
    fn options(&self) -> SimpleOptions {
        SimpleOptions {
            hex: self.hex,
            value_only: false,
        }
    }

    /// Writes bytes to stdout as they are.
    pub(crate) fn emit(&self, bytes: &[u8]) -> Result<(), CtlError> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(|error| CtlError::new(Exit::Io, error.to_string()))
    }

    fn json<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), CtlError> {
        let bytes = json::line(value).map_err(|error| CtlError::general(error.to_string()))?;
        self.emit(&bytes)
    }

    /// The simple or JSON form of an answer that has no table form. As in
    /// etcdctl, asking for a table fails only after the request was made.
    fn simple_or_json<T: Serialize>(
        &self,
        value: &T,
        simple: impl FnOnce() -> Vec<u8>,
    ) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => self.emit(&simple()),
            Format::Json => self.json(value),
            Format::Table => Err(CtlError::format_unsupported(self.format.name())),
        }
    }

    /// Refuses a format up front, as etcdctl does for `--print-value-only`.
    pub(crate) fn is_simple(&self) -> bool {
        self.format == Format::Simple
    }

    /// `put`: OK and the previous pair, or JSON.
    pub(crate) fn put(&self, result: &PutResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::put(result, self.options()))
    }

    /// `get`: pairs (or values, or the count), or JSON.
    pub(crate) fn get(
        &self,
        result: &RangeResult,
        value_only: bool,
        count_only: bool,
    ) -> Result<(), CtlError> {
        let options = SimpleOptions {
            value_only,
            ..self.options()
        };
        if count_only {
            return self.simple_or_json(result, || simple::count(result));
        }
        self.simple_or_json(result, || simple::get(result, options))
    }

    /// `del`: the count and previous pairs, or JSON.
    pub(crate) fn delete(&self, result: &DeleteResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::delete(result, self.options()))
    }

    /// `txn`: the verdict and each op's answer, or JSON.
    pub(crate) fn txn(&self, result: &TxnResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::txn(result, self.options()))
    }

    /// `watch`: each event of one answer, or the answer as JSON.
    pub(crate) fn watch(&self, result: &WatchResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::watch(result, self.options()))
    }

    /// `lease grant`.
    pub(crate) fn lease_grant(&self, result: &LeaseGrantResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::lease_grant(result))
    }

    /// `lease revoke`.
    pub(crate) fn lease_revoke(&self, id: i64, result: &LeaseRevokeResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::lease_revoke(id))
    }

    /// `lease keep-alive`, once per renewal.
    pub(crate) fn lease_keep_alive(&self, result: &LeaseKeepAliveResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::lease_keep_alive(result))
    }

    /// `lease timetolive`.
    pub(crate) fn lease_time_to_live(
        &self,
        result: &LeaseTimeToLiveResult,
        with_keys: bool,
    ) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::lease_time_to_live(result, with_keys))
    }

    /// `lease list`.
    pub(crate) fn lease_list(&self, result: &LeaseListResult) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::lease_list(result))
    }

    /// `member list`, the one member command with a table form.
    pub(crate) fn member_list(&self, result: &MembersResult) -> Result<(), CtlError> {
        match self.format {
            Format::Table => {
                let rows: Vec<Vec<String>> = result.members.iter().map(rows::member).collect();
                self.emit(table::render(&rows::MEMBER_HEADER, &rows).as_bytes())
            }
            _ => self.simple_or_json(result, || simple::member_list(result)),
        }
    }

    /// `member add`, with the settings the new member needs in simple form.
    pub(crate) fn member_added(
        &self,
        result: &MemberAddResult,
        name: &str,
        peer_urls: &[String],
    ) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::member_added(result, name, peer_urls))
    }

    /// `member remove`, `update` and `promote`.
    pub(crate) fn member_changed(
        &self,
        id: u64,
        verb: &str,
        result: &MembersResult,
    ) -> Result<(), CtlError> {
        self.simple_or_json(result, || simple::member_changed(id, verb, result))
    }

    /// `endpoint status`, one row per endpoint that answered.
    pub(crate) fn endpoint_status(&self, statuses: &[EndpointStatus]) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => self.emit(&simple::endpoint_status(statuses)),
            Format::Json => self.json(statuses),
            Format::Table => {
                let rows: Vec<Vec<String>> = statuses.iter().map(rows::status).collect();
                self.emit(table::render(&rows::STATUS_HEADER, &rows).as_bytes())
            }
        }
    }

    /// Health checks; the simple form goes to stderr, as etcdctl writes it.
    pub(crate) fn endpoint_health(&self, checks: &[EndpointHealth]) -> Result<(), CtlError> {
        match self.format {
            Format::Simple => {
                let mut stderr = std::io::stderr().lock();
                stderr
                    .write_all(&simple::endpoint_health(checks))
                    .map_err(|error| CtlError::new(Exit::Io, error.to_string()))
            }
            Format::Json => self.json(checks),
            Format::Table => {
                let rows: Vec<Vec<String>> = checks.iter().map(rows::health).collect();
                self.emit(table::render(&rows::HEALTH_HEADER, &rows).as_bytes())
            }
        }
    }
}
