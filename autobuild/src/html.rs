//! The status page, the build page and the badge. Every value that may come
//! from a payload (refs, messages, names, errors, logs) goes through
//! [`escape`].

use std::fmt::Write;

use crate::config::Config;
use crate::queue::{BuildRecord, BuildState};

/// HTML-escape text for element content and quoted attribute values;
/// control characters other than newline and tab are shown escaped
/// (`\u{1b}`).
pub fn escape(s: &str) -> String {
    let s = crate::redact::escape_control_keep_lines(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `2026-11-23 12:14:53Z` from Unix milliseconds.
pub fn format_time(ms: i64) -> String {
    hoist_builder::engine::assemble::rfc3339(ms.div_euclid(1000)).replacen('T', " ", 1)
}

/// `1m 05s`, `830ms`.
pub fn format_duration(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m {:02}s", ms / 60_000, ms % 60_000 / 1000)
    }
}

fn state_colour(state: BuildState) -> &'static str {
    match state {
        BuildState::Queued => "#6b7280",
        BuildState::Running => "#2563eb",
        BuildState::Succeeded => "#16a34a",
        BuildState::Failed => "#dc2626",
        BuildState::Superseded => "#9ca3af",
        BuildState::Interrupted => "#d97706",
    }
}

fn state_pill(state: BuildState) -> String {
    format!(
        "<span class=\"state\" style=\"background:{}\">{}</span>",
        state_colour(state),
        state.as_str()
    )
}

const STYLE: &str = "
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#111827;background:#f9fafb}
header{background:#111827;color:#f9fafb;padding:12px 24px;display:flex;align-items:baseline;gap:16px}
header h1{font-size:18px;margin:0} header span{color:#9ca3af;font-size:12px}
main{padding:16px 24px;max-width:1200px}
h2{font-size:15px;margin:20px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e5e7eb}
th,td{text-align:left;padding:6px 10px;white-space:nowrap;border-bottom:1px solid #e5e7eb;vertical-align:top}
th{background:#f3f4f6;font-weight:600;font-size:12px;text-transform:uppercase;color:#4b5563}
td.msg{max-width:320px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.state{color:#fff;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600}
pre.log{background:#111827;color:#e5e7eb;padding:12px;overflow:auto;max-height:70vh;white-space:pre-wrap}
a{color:#1d4ed8;text-decoration:none} a:hover{text-decoration:underline}
.muted{color:#6b7280}
";

fn page(title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh {
        "<meta http-equiv=\"refresh\" content=\"5\">"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{refresh}\
         <title>{}</title><style>{STYLE}</style></head><body>\
         <header><h1><a href=\"/\" style=\"color:inherit\">hoist autobuild</a></h1>\
         <span>{}</span></header><main>{body}</main></body></html>\n",
        escape(title),
        escape(title)
    )
}

fn build_row(b: &BuildRecord, out: &mut String) {
    let first_line = b.message.lines().next().unwrap_or("");
    let digest = b
        .digest
        .as_deref()
        .map(|d| {
            let short = d.strip_prefix("sha256:").unwrap_or(d);
            format!(
                "<code title=\"{}\">{}</code>",
                escape(d),
                escape(short.get(..12).unwrap_or(short))
            )
        })
        .unwrap_or_default();
    let _ =
        write!(
        out,
        "<tr id=\"build-{id}\" data-state=\"{state}\"><td><a href=\"/builds/{id}\">#{id}</a></td>\
         <td>{repo}</td><td><code>{git_ref}</code></td><td><code>{sha}</code></td>\
         <td class=\"msg\" title=\"{msg}\">{msg}</td><td>{pill}</td><td>{trigger}</td>\
         <td>{queued}</td><td>{duration}</td><td>{digest}</td><td>{tags}</td></tr>",
        id = b.id,
        state = b.state.as_str(),
        repo = escape(&b.repo),
        git_ref = escape(b.ref_name()),
        sha = escape(b.short_sha()),
        msg = escape(first_line),
        pill = state_pill(b.state),
        // The worker that ran it (a PostgreSQL queue's builds), under the
        // trigger: the table keeps its columns.
        trigger = {
            // A succeeded `rebase:` build was rebased, never rebuilt.
            let rebased = match b.trigger.strip_prefix("rebase:") {
                Some(base) if b.state == BuildState::Succeeded => {
                    format!("<br><span class=\"rebased\">rebased onto {}</span>", escape(base))
                }
                _ => String::new(),
            };
            match &b.worker {
                Some(w) => format!(
                    "{}{rebased}<br><span class=\"worker muted\" title=\"worker\">on {}</span>",
                    escape(&b.trigger),
                    escape(w)
                ),
                None => format!("{}{rebased}", escape(&b.trigger)),
            }
        },
        queued = format_time(b.queued_at),
        duration = b.duration_ms().map(format_duration).unwrap_or_default(),
        tags = b
            .tags
            .iter()
            .map(|t| format!("<code>{}</code>", escape(t)))
            .collect::<Vec<_>>()
            .join("<br>"),
    );
}

const BUILD_HEADER: &str = "<tr><th>Build</th><th>Repository</th><th>Ref</th><th>Commit</th>\
    <th>Message</th><th>State</th><th>Trigger</th><th>Queued</th><th>Duration</th>\
    <th>Digest</th><th>Tags</th></tr>";

/// `GET /`: repositories with their last build, then recent builds.
pub fn status_page(
    config: &Config,
    latest: &std::collections::BTreeMap<String, BuildRecord>,
    recent: &[BuildRecord],
) -> String {
    let mut body = String::from(
        "<h2>Repositories</h2><table id=\"repos\"><tr><th>Repository</th><th>URL</th>\
        <th>Last build</th><th>State</th><th>Ref</th><th>Commit</th><th>Badge</th></tr>",
    );
    for repo in &config.repos {
        let name = escape(&repo.name);
        let url = escape(&crate::redact::redact_credentials(&repo.url));
        match latest.get(&repo.name) {
            Some(b) => {
                let _ = write!(
                    body,
                    "<tr><td>{name}</td><td><code>{url}</code></td>\
                     <td><a href=\"/builds/{id}\">#{id}</a></td><td>{pill}</td>\
                     <td><code>{r}</code></td><td><code>{sha}</code></td>\
                     <td><img alt=\"badge\" src=\"/badge/{name}.svg\"></td></tr>",
                    id = b.id,
                    pill = state_pill(b.state),
                    r = escape(b.ref_name()),
                    sha = escape(b.short_sha()),
                );
            }
            None => {
                let _ = write!(
                    body,
                    "<tr><td>{name}</td><td><code>{url}</code></td>\
                     <td class=\"muted\">no builds yet</td><td></td><td></td>\
                     <td></td><td><img alt=\"badge\" src=\"/badge/{name}.svg\"></td></tr>"
                );
            }
        }
    }
    body.push_str("</table><h2>Recent builds</h2><table id=\"builds\">");
    body.push_str(BUILD_HEADER);
    for b in recent {
        build_row(b, &mut body);
    }
    if recent.is_empty() {
        body.push_str("<tr><td colspan=\"11\" class=\"muted\">no builds yet</td></tr>");
    }
    body.push_str("</table>");
    page("builds", true, &body)
}

/// `GET /builds/ID`: the record and its log.
pub fn build_page(b: &BuildRecord, log: &str) -> String {
    let mut body = format!("<h2>Build #{}</h2><table>{BUILD_HEADER}", b.id);
    build_row(b, &mut body);
    body.push_str("</table>");
    if !b.message.is_empty() {
        let _ = write!(
            body,
            "<h2>Commit message</h2><pre>{}</pre>",
            escape(&b.message)
        );
    }
    if let Some(e) = &b.error {
        let _ = write!(body, "<h2>Error</h2><pre>{}</pre>", escape(e));
    }
    let _ = write!(body, "<h2>Log</h2><pre class=\"log\">{}</pre>", escape(log));
    page(&format!("build #{}", b.id), !b.state.is_final(), &body)
}

/// `GET /badge/NAME.svg`.
pub fn badge(state: Option<BuildState>) -> String {
    let (text, colour) = match state {
        None => ("none", "#9ca3af"),
        Some(BuildState::Succeeded) => ("passing", "#16a34a"),
        Some(BuildState::Failed) => ("failing", "#dc2626"),
        Some(s) => (s.as_str(), state_colour(s)),
    };
    let right = 10 + 7 * text.len() as u32;
    let total = 40 + right;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" \
         aria-label=\"build: {text}\"><title>build: {text}</title>\
         <rect width=\"40\" height=\"20\" fill=\"#555\"/>\
         <rect x=\"40\" width=\"{right}\" height=\"20\" fill=\"{colour}\"/>\
         <g fill=\"#fff\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\">\
         <text x=\"6\" y=\"14\">build</text><text x=\"45\" y=\"14\">{text}</text></g></svg>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_formats() {
        assert_eq!(escape("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_795_436_093_000), "2026-11-23 12:14:53Z");
        assert_eq!(format_duration(65_000), "1m 05s");
    }
}
