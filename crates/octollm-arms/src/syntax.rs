//! Syntax checks for produced code, where a checker exists on the machine. Parsing only:
//! nothing of the code runs here (running is the executor's job, inside its sandbox).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Python's own parser: `ast.parse` reads the code from stdin and never executes it.
const PYTHON_CHECK: &str = "import ast,sys\ntry:\n ast.parse(sys.stdin.read())\nexcept SyntaxError as e:\n print(f'line {e.lineno}: {e.msg}'); sys.exit(1)";

/// `None` when no checker is available for `language`; otherwise the verdict.
pub async fn check(language: &str, code: &str) -> Option<Result<(), String>> {
    match language.to_ascii_lowercase().as_str() {
        "python" | "python3" | "py" => Some(check_python(code).await?),
        "json" => Some(
            serde_json::from_str::<serde_json::Value>(code)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        ),
        _ => None,
    }
}

async fn check_python(code: &str) -> Option<Result<(), String>> {
    let mut child = Command::new("python3")
        .args(["-I", "-c", PYTHON_CHECK])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let code = code.to_owned();
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(code.as_bytes()).await;
    });
    let output = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .ok()?
        .ok()?;
    let _ = writer.await;
    if output.status.success() {
        Some(Ok(()))
    } else {
        Some(Err(String::from_utf8_lossy(&output.stdout)
            .trim()
            .to_owned()))
    }
}

/// The first fenced code block (```lang ... ```), or the whole text when there is none.
pub fn extract_code(text: &str) -> (String, Option<String>) {
    if let Some(start) = text.find("```") {
        let after = &text[start + 3..];
        let (lang, body) = after.split_once('\n').unwrap_or(("", after));
        let body = body.split("```").next().unwrap_or(body);
        let lang = lang.trim();
        return (
            body.trim_end().to_owned(),
            (!lang.is_empty()).then(|| lang.to_owned()),
        );
    }
    (text.trim().to_owned(), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn python_syntax_is_checked_without_running() {
        assert_eq!(
            check("python", "def f(n):\n    return n\n").await,
            Some(Ok(()))
        );
        let err = check("python", "def f(:\n").await.unwrap().unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        // Would create a file if it ran.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let code = format!("open({:?}, 'w').write('x')", marker.display().to_string());
        assert_eq!(check("python", &code).await, Some(Ok(())));
        assert!(!marker.exists());
        assert_eq!(check("cobol", "x").await, None);
    }

    #[test]
    fn extracts_fenced_code() {
        assert_eq!(
            extract_code("Here:\n```python\nprint(1)\n```\nDone"),
            ("print(1)".into(), Some("python".into()))
        );
        assert_eq!(extract_code("print(2)"), ("print(2)".into(), None));
    }
}
