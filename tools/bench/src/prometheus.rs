//! Reading a service's own counters during a run: a plain HTTP/1.0 GET of a
//! Prometheus `/metrics` page and a parser for the text format. The services
//! serve nothing else to scrape, and a GET this simple needs no HTTP client.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A scrape longer than this means the service is in trouble; the run says so.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// A metrics page larger than this is not one of ours.
const MAX_PAGE_BYTES: u64 = 16 << 20;

/// The text of the metrics page at `url` (`http://host:port/path`), so a
/// workload can read counters before and after it runs.
pub(crate) async fn scrape(url: &str) -> anyhow::Result<String> {
    let (authority, path) = split_url(url)?;
    let fetch = async {
        let mut stream = TcpStream::connect(authority).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").as_bytes())
            .await?;
        // HTTP/1.0: the server closes the connection after the response.
        let mut response = Vec::new();
        stream
            .take(MAX_PAGE_BYTES)
            .read_to_end(&mut response)
            .await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(SCRAPE_TIMEOUT, fetch)
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no answer in {SCRAPE_TIMEOUT:?}"))??;
    body(&response).map_err(|error| anyhow::anyhow!("{url}: {error}"))
}

/// `host:port` and the path of an `http://` URL; only plain HTTP is spoken.
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("`{url}`: only http:// URLs can be scraped"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |at| rest.split_at(at));
    anyhow::ensure!(!authority.is_empty(), "`{url}` names no host");
    Ok((authority, path))
}

/// The body of a whole HTTP response, if its status is 200.
fn body(response: &[u8]) -> anyhow::Result<String> {
    let text = String::from_utf8_lossy(response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("the response has no header end"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line.split_whitespace().nth(1);
    anyhow::ensure!(
        status_line.starts_with("HTTP/") && status == Some("200"),
        "answered `{status_line}`"
    );
    Ok(body.to_owned())
}

/// The value of the unlabelled sample `name` in a Prometheus text page, so
/// a counter can be read without knowing anything else on the page.
pub(crate) fn value(page: &str, name: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (sample, labels, value) = sample(line)?;
        (sample == name && labels.is_empty()).then_some(value)
    })
}

/// One sample line split into name, label text (without braces) and value;
/// `None` for comments, blank lines and anything malformed.
fn sample(line: &str) -> Option<(&str, &str, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let (name, rest) = line.split_at(name_end);
    if name.is_empty() {
        return None;
    }
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => {
            let close = closing_brace(inside)?;
            (&inside[..close], &inside[close + 1..])
        }
        None => ("", rest),
    };
    // A timestamp may follow the value; it is not needed.
    let value = number(rest.split_whitespace().next()?)?;
    Some((name, labels.trim(), value))
}

/// Where the label set ends: the first `}` outside a quoted label value.
fn closing_brace(labels: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (at, c) in labels.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(at),
            _ => {}
        }
    }
    None
}

/// A sample value, with the format's spellings of infinity and NaN.
fn number(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP cairn_lease_active 1 while this instance holds the claim
# TYPE cairn_lease_active gauge
cairn_lease_active 1
# HELP cairn_lease_checkpoint_commands_total Checkpoint commands written to the log, renewals included
# TYPE cairn_lease_checkpoint_commands_total counter
cairn_lease_checkpoint_commands_total 1234
cairn_lease_checkpoint_commands_total_extra 7
process_start_time_seconds 1.7e9
rpc_total{method=\"Put\",note=\"a } in {quotes}\"} 5
rpc_total 9 1700000000000
up{} 3
weird +Inf
";

    #[test]
    fn unlabelled_samples_are_found_by_exact_name() {
        assert_eq!(value(PAGE, "cairn_lease_active"), Some(1.0));
        assert_eq!(
            value(PAGE, "cairn_lease_checkpoint_commands_total"),
            Some(1234.0)
        );
        assert_eq!(value(PAGE, "process_start_time_seconds"), Some(1.7e9));
        assert_eq!(value(PAGE, "cairn_lease"), None);
        assert_eq!(value(PAGE, "missing"), None);
    }

    #[test]
    fn labelled_samples_and_timestamps_do_not_confuse_the_reader() {
        // The labelled rpc_total comes first and is passed over; its label
        // value holds braces, which must not end the label set early.
        assert_eq!(value(PAGE, "rpc_total"), Some(9.0));
        assert_eq!(value(PAGE, "up"), Some(3.0));
        assert_eq!(value(PAGE, "weird"), Some(f64::INFINITY));
        assert_eq!(
            sample("rpc_total{method=\"Put\",note=\"a } in {quotes}\"} 5"),
            Some(("rpc_total", "method=\"Put\",note=\"a } in {quotes}\"", 5.0))
        );
        assert_eq!(
            sample(r#"x{a="say \"}\""} 2"#),
            Some(("x", r#"a="say \"}\"""#, 2.0))
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        for line in [
            "",
            "   ",
            "# comment 1",
            "no_value",
            "bad_value abc",
            "unclosed{a=\"b\" 1",
            "{a=\"b\"} 1",
        ] {
            assert_eq!(sample(line), None, "{line:?}");
        }
        assert!(value("", "x").is_none());
    }

    #[test]
    fn urls_split_into_authority_and_path() -> anyhow::Result<()> {
        assert_eq!(
            split_url("http://127.0.0.1:9131/metrics")?,
            ("127.0.0.1:9131", "/metrics")
        );
        assert_eq!(split_url("http://localhost:80")?, ("localhost:80", "/"));
        assert!(split_url("https://127.0.0.1:9131/metrics").is_err());
        assert!(split_url("127.0.0.1:9131/metrics").is_err());
        assert!(split_url("http:///metrics").is_err());
        Ok(())
    }

    #[test]
    fn only_a_200_response_yields_its_body() -> anyhow::Result<()> {
        let ok = b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\ncairn_lease_active 0\n";
        assert_eq!(body(ok)?, "cairn_lease_active 0\n");
        assert!(body(b"HTTP/1.1 404 Not Found\r\n\r\nnope").is_err());
        assert!(body(b"HTTP/1.0 200 OK\r\ntruncated").is_err());
        assert!(body(b"").is_err());
        assert!(body(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        Ok(())
    }

    #[tokio::test]
    async fn a_page_is_fetched_over_plain_http() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            let mut request = vec![0; 1024];
            let read = stream.read(&mut request).await?;
            let request = String::from_utf8_lossy(&request[..read]).into_owned();
            stream
                .write_all(b"HTTP/1.0 200 OK\r\n\r\ncairn_lease_active 1\n")
                .await?;
            anyhow::Ok(request)
        });
        let page = scrape(&format!("http://{address}/metrics")).await?;
        assert_eq!(value(&page, "cairn_lease_active"), Some(1.0));
        let request = server.await??;
        assert!(
            request.starts_with("GET /metrics HTTP/1.0\r\n"),
            "{request}"
        );
        Ok(())
    }
}
