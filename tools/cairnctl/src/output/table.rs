//! `-w table`: the boxes etcdctl draws with an early `olekukonko/tablewriter`.
//! Titles are centred, cells right-aligned, and a cell wider than 30
//! columns is wrapped at spaces to the column's width at the time its row is
//! added (so one early long word widens the wrapping of later rows).

/// Cells wider than this are wrapped.
const WRAP_WIDTH: usize = 30;

/// Draws a table with a title row and the given rows.
pub(crate) fn render(titles: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = titles
        .iter()
        .map(|title| width(title).min(WRAP_WIDTH))
        .collect();
    let mut wrapped_rows = Vec::with_capacity(rows.len());
    for row in rows {
        let mut cells = Vec::with_capacity(titles.len());
        for (column, column_width) in widths.iter_mut().enumerate() {
            let cell = row.get(column).map_or("", String::as_str);
            *column_width = (*column_width).max(width(cell).min(WRAP_WIDTH));
            let lines = wrap(cell, *column_width);
            let widest = lines.iter().map(|line| width(line)).max().unwrap_or(0);
            *column_width = (*column_width).max(widest);
            cells.push(lines);
        }
        wrapped_rows.push(cells);
    }

    let border = border_line(&widths);
    let mut out = border.clone();
    out.push('|');
    for (title, column_width) in titles.iter().zip(&widths) {
        out.push(' ');
        out.push_str(&centre(title, *column_width));
        out.push_str(" |");
    }
    out.push('\n');
    out.push_str(&border);
    for cells in &wrapped_rows {
        let height = cells.iter().map(Vec::len).max().unwrap_or(1);
        for line_index in 0..height {
            out.push('|');
            for (lines, column_width) in cells.iter().zip(&widths) {
                let text = lines.get(line_index).map_or("", String::as_str);
                out.push(' ');
                out.push_str(&" ".repeat(column_width.saturating_sub(width(text))));
                out.push_str(text);
                out.push_str(" |");
            }
            out.push('\n');
        }
    }
    out.push_str(&border);
    out
}

fn width(text: &str) -> usize {
    text.chars().count()
}

fn border_line(widths: &[usize]) -> String {
    let mut line = String::from("+");
    for column_width in widths {
        line.push_str(&"-".repeat(column_width + 2));
        line.push('+');
    }
    line.push('\n');
    line
}

fn centre(text: &str, column_width: usize) -> String {
    let gap = column_width.saturating_sub(width(text));
    let left = gap / 2;
    format!("{}{text}{}", " ".repeat(left), " ".repeat(gap - left))
}

/// Splits `text` at spaces into lines of at most `limit` columns (or the
/// longest word), choosing the breaks that leave the least squared slack on
/// every line but the last.
fn wrap(text: &str, limit: usize) -> Vec<String> {
    let flattened = text.trim().replace('\n', " ");
    let words: Vec<&str> = flattened.split(' ').collect();
    let limit = words.iter().map(|word| width(word)).fold(limit, usize::max);
    let count = words.len();
    // cost[i]: the least cost of laying out words[i..]; next_break[i]: where
    // the line that starts at word i ends.
    let mut cost = vec![u64::MAX; count + 1];
    let mut next_break = vec![count; count + 1];
    cost[count] = 0;
    for start in (0..count).rev() {
        let mut line_width = 0;
        for end in start + 1..=count {
            line_width += width(words[end - 1]) + usize::from(end - 1 > start);
            if end == count && line_width <= limit {
                cost[start] = 0;
                next_break[start] = count;
                break;
            }
            if end == count || line_width > limit {
                break;
            }
            let slack = (limit - line_width) as u64;
            let candidate = slack * slack + cost[end];
            if candidate < cost[start] {
                cost[start] = candidate;
                next_break[start] = end;
            }
        }
    }
    let mut lines = Vec::new();
    let mut start = 0;
    while start < count {
        let end = next_break[start].max(start + 1);
        lines.push(words[start..end].join(" "));
        start = end;
    }
    if lines.is_empty() {
        lines.push(String::new());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_table_matches_etcdctl() {
        let rows = vec![
            vec![
                "2e1259d415f2a040".to_owned(),
                "started".to_owned(),
                "n1".to_owned(),
                "http://127.0.0.1:23800".to_owned(),
                "http://127.0.0.1:23790".to_owned(),
                "false".to_owned(),
            ],
            vec![
                "30a5047841625559".to_owned(),
                "unstarted".to_owned(),
                String::new(),
                "http://127.0.0.1:23801".to_owned(),
                String::new(),
                "true".to_owned(),
            ],
        ];
        let expected = "\
+------------------+-----------+------+------------------------+------------------------+------------+
|        ID        |  STATUS   | NAME |       PEER ADDRS       |      CLIENT ADDRS      | IS LEARNER |
+------------------+-----------+------+------------------------+------------------------+------------+
| 2e1259d415f2a040 |   started |   n1 | http://127.0.0.1:23800 | http://127.0.0.1:23790 |      false |
| 30a5047841625559 | unstarted |      | http://127.0.0.1:23801 |                        |       true |
+------------------+-----------+------+------------------------+------------------------+------------+
";
        assert_eq!(render(&crate::output::rows::MEMBER_HEADER, &rows), expected);
    }

    #[test]
    fn health_table_counts_characters_not_bytes() {
        let rows = vec![vec![
            "127.0.0.1:23790".to_owned(),
            "true".to_owned(),
            "784.697µs".to_owned(),
            String::new(),
        ]];
        let expected = "\
+-----------------+--------+-----------+-------+
|    ENDPOINT     | HEALTH |   TOOK    | ERROR |
+-----------------+--------+-----------+-------+
| 127.0.0.1:23790 |   true | 784.697µs |       |
+-----------------+--------+-----------+-------+
";
        assert_eq!(render(&crate::output::rows::HEALTH_HEADER, &rows), expected);
    }

    #[test]
    fn long_cells_wrap_at_spaces() {
        assert_eq!(wrap("short", 30), vec!["short"]);
        assert_eq!(wrap("", 30), vec![""]);
        assert_eq!(
            wrap("aaaa bbbb cccc dddd eeee ffff gggg", 30),
            vec!["aaaa bbbb cccc dddd eeee ffff", "gggg"]
        );
        // Least squared slack, not greedy: greedy would give "aaa bb", "cc", "ddddd".
        assert_eq!(wrap("aaa bb cc ddddd", 6), vec!["aaa", "bb cc", "ddddd"]);
        assert_eq!(
            wrap("a-very-long-unbreakable-word-of-forty-chars", 30).len(),
            1
        );
        let rows = vec![vec![
            "x".to_owned(),
            "rpc error: code = Unavailable desc = connection refused".to_owned(),
        ]];
        let table = render(&["A", "B"], &rows);
        assert!(
            table.contains("| x |  rpc error: code = Unavailable |\n"),
            "{table}"
        );
        assert!(
            table.contains("|   |      desc = connection refused |\n"),
            "{table}"
        );
    }
}
