//! Output helpers shared by the commands: sizes, IDs, tables, names.

use std::io::Write;

use hoist_registry::reference::Reference;

pub use hoist_builder::pipeline::familiar;
pub use hoist_cache::units::format_size as human_size;

/// The 12-hex-digit short form of a digest (`sha256:` dropped).
pub fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

/// Print rows as aligned columns (three spaces apart, like Docker's
/// tabwriter); the last column is not padded.
pub fn print_table(
    out: &mut impl Write,
    header: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    // Cells quote images' and Dockerfiles' text (a base image's CREATED BY, a
    // step's command): one line per row, and no control character reaches
    // the terminal.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|cell| hoist_cache::text::escape(cell).into_owned())
                .collect()
        })
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(cell);
                s.push_str(&" ".repeat(widths[i] - cell.chars().count() + 3));
            }
        }
        s
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

/// Split a stored (fully qualified) ref name into Docker's REPOSITORY and TAG
/// columns: `docker.io/library/busybox:latest` → (`busybox`, `latest`).
pub fn repository_and_tag(name: &str) -> (String, String) {
    match Reference::parse(name) {
        Ok(reference) => {
            let tag = reference.tag().unwrap_or("<none>").to_string();
            let familiar = reference.familiar();
            let repository = familiar
                .strip_suffix(&format!(":{tag}"))
                .unwrap_or(&familiar)
                .to_string();
            (repository, tag)
        }
        Err(_) => (name.to_string(), "<none>".to_string()),
    }
}

/// One stderr line for a transfer being retried, as pull and push print it.
pub fn report_retry(notice: &hoist_registry::RetryNotice) {
    eprintln!(
        "retrying {} (attempt {}) in {:.1}s: {}",
        notice.action,
        notice.attempt + 1,
        notice.delay.as_secs_f64(),
        notice.error
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_columns() {
        assert_eq!(
            repository_and_tag("docker.io/library/busybox:latest"),
            ("busybox".to_string(), "latest".to_string())
        );
        assert_eq!(
            repository_and_tag("127.0.0.1:5000/a/b:1"),
            ("127.0.0.1:5000/a/b".to_string(), "1".to_string())
        );
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
