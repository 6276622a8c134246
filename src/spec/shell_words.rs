//! Splitting a shell-form command into argv for images without `/bin/sh`.
//! Only plain words are accepted: POSIX single quotes, double quotes and
//! backslash escapes are honoured, and every construct that needs a real
//! shell (pipes, redirections, command lists, expansions, globs, tilde,
//! leading assignments, keywords, comments, newlines) is refused with a
//! [`ShellSyntax`] error that names the construct and says how to fix it.

use super::model::Run;

/// A shell-form command that cannot run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot run `{command}` without a shell: {problem} (at character {position}); \
     the image has no /bin/sh, so write the command in exec form \
     (`run: [\"prog\", \"arg\"]`) or use an image with /bin/sh"
)]
pub struct ShellSyntax {
    /// The command text as written.
    pub command: String,
    /// What needs a shell, e.g. "a pipe `|`".
    pub problem: String,
    /// 1-based character position of the construct in `command`.
    pub position: usize,
}

impl Run {
    /// The argv to execute directly, for images with no `/bin/sh`: exec
    /// form as is, shell form split into words when it is plain words.
    pub fn words_without_shell(&self) -> Result<Vec<String>, ShellSyntax> {
        match self {
            Run::Exec(argv) => Ok(argv.clone()),
            Run::Shell(text) => split(text),
        }
    }
}

/// Shell keywords that make the first word a compound command.
const KEYWORDS: &[&str] = &[
    "if", "then", "else", "elif", "fi", "for", "while", "until", "do", "done", "case", "esac",
    "in", "{", "}", "!", "function", "select",
];

/// Split `text` into words the way `sh` would, refusing anything beyond
/// quoting.
pub fn split(text: &str) -> Result<Vec<String>, ShellSyntax> {
    let refuse = |problem: &str, index: usize| ShellSyntax {
        command: text.to_string(),
        problem: problem.to_string(),
        position: index + 1,
    };
    let chars: Vec<char> = text.chars().collect();
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    // Whether the current word had quoting or escapes (then `=` is literal).
    let mut quoted = false;
    let mut first_word_start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            ' ' | '\t' => {
                if in_word {
                    finish_word(&mut words, &mut word, quoted, first_word_start, &refuse)?;
                    in_word = false;
                    quoted = false;
                }
            }
            '\n' | '\r' => {
                return Err(refuse(
                    "a newline (several commands; make one command per list entry)",
                    i,
                ))
            }
            '\\' => match next {
                Some('\n') => i += 1,
                Some(escaped) => {
                    start(&mut in_word, &mut first_word_start, &words, i);
                    quoted = true;
                    word.push(escaped);
                    i += 1;
                }
                None => return Err(refuse("a trailing backslash", i)),
            },
            '\'' => {
                start(&mut in_word, &mut first_word_start, &words, i);
                quoted = true;
                let open = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('\'') => break,
                        Some(&inner) => word.push(inner),
                        None => return Err(refuse("an unterminated single quote `'`", open)),
                    }
                    i += 1;
                }
            }
            '"' => {
                start(&mut in_word, &mut first_word_start, &words, i);
                quoted = true;
                let open = i;
                i += 1;
                loop {
                    match chars.get(i) {
                        Some('"') => break,
                        Some('\\') => match chars.get(i + 1) {
                            Some(&e @ ('$' | '`' | '"' | '\\')) => {
                                word.push(e);
                                i += 1;
                            }
                            Some('\n') => i += 1,
                            _ => word.push('\\'),
                        },
                        Some('$') => {
                            return Err(refuse(
                                "an expansion `$` inside double quotes (variable or command substitution)",
                                i,
                            ))
                        }
                        Some('`') => {
                            return Err(refuse(
                                "a command substitution with backticks inside double quotes",
                                i,
                            ))
                        }
                        Some(&inner) => word.push(inner),
                        None => return Err(refuse("an unterminated double quote `\"`", open)),
                    }
                    i += 1;
                }
            }
            '|' if next == Some('|') => return Err(refuse("an or-list `||`", i)),
            '|' => return Err(refuse("a pipe `|`", i)),
            '&' if next == Some('&') => return Err(refuse("an and-list `&&`", i)),
            '&' => return Err(refuse("a background `&`", i)),
            ';' => return Err(refuse("a command separator `;`", i)),
            '<' | '>' => return Err(refuse(&format!("a redirection `{c}`"), i)),
            '(' | ')' => return Err(refuse(&format!("a subshell `{c}`"), i)),
            '$' if next == Some('(') => return Err(refuse("a command substitution `$(...)`", i)),
            '$' => return Err(refuse("a variable expansion `$`", i)),
            '`' => return Err(refuse("a command substitution with backticks", i)),
            '*' | '?' | '[' => return Err(refuse(&format!("a glob pattern `{c}`"), i)),
            '#' if !in_word => return Err(refuse("a comment `#`", i)),
            '~' if !in_word => return Err(refuse("a tilde expansion `~`", i)),
            '=' if words.is_empty() && !quoted && is_env_name(&word) => {
                return Err(refuse(
                    &format!(
                        "a variable assignment `{word}=...` (set the variable with `env:` instead)"
                    ),
                    first_word_start,
                ))
            }
            other => {
                start(&mut in_word, &mut first_word_start, &words, i);
                word.push(other);
            }
        }
        i += 1;
    }
    if in_word {
        finish_word(&mut words, &mut word, quoted, first_word_start, &refuse)?;
    }
    if words.is_empty() {
        return Err(refuse("the command is empty", 0));
    }
    Ok(words)
}

fn start(in_word: &mut bool, first_word_start: &mut usize, words: &[String], i: usize) {
    if !*in_word {
        *in_word = true;
        if words.is_empty() {
            *first_word_start = i;
        }
    }
}

fn finish_word(
    words: &mut Vec<String>,
    word: &mut String,
    quoted: bool,
    first_word_start: usize,
    refuse: &dyn Fn(&str, usize) -> ShellSyntax,
) -> Result<(), ShellSyntax> {
    if words.is_empty() && !quoted && KEYWORDS.contains(&word.as_str()) {
        return Err(refuse(
            &format!("the shell keyword `{word}`"),
            first_word_start,
        ));
    }
    words.push(std::mem::take(word));
    Ok(())
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        match split(text) {
            Ok(words) => words,
            Err(err) => panic!("{text:?} refused: {err}"),
        }
    }

    fn refused(text: &str) -> ShellSyntax {
        match split(text) {
            Ok(words) => panic!("{text:?} accepted as {words:?}"),
            Err(err) => err,
        }
    }

    #[test]
    fn plain_words_and_quoting() {
        assert_eq!(words("cargo test --all"), ["cargo", "test", "--all"]);
        assert_eq!(words("  echo   a\tb  "), ["echo", "a", "b"]);
        assert_eq!(words("echo 'a b' \"c d\""), ["echo", "a b", "c d"]);
        assert_eq!(words("echo it\\'s"), ["echo", "it's"]);
        assert_eq!(words("echo 'a|b;c>d $x *'"), ["echo", "a|b;c>d $x *"]);
        assert_eq!(
            words("echo \"a\\\"b\\\\c\\$d\\n\""),
            ["echo", "a\"b\\c$d\\n"]
        );
        assert_eq!(words("echo '' x"), ["echo", "", "x"]);
        assert_eq!(words("echo a'b'\"c\"d"), ["echo", "abcd"]);
        assert_eq!(words("echo a\\\nb"), ["echo", "ab"]);
        assert_eq!(words("make CC=gcc"), ["make", "CC=gcc"]);
        assert_eq!(words("'A=b' prog"), ["A=b", "prog"]);
        assert_eq!(words("echo a#b x~y"), ["echo", "a#b", "x~y"]);
        assert_eq!(words("\"if\" x"), ["if", "x"]);
    }

    #[test]
    fn constructs_that_need_a_shell_are_named() {
        let cases = [
            ("a | b", "a pipe `|`", 3),
            ("a || b", "an or-list `||`", 3),
            ("a && b", "an and-list `&&`", 3),
            ("a &", "a background `&`", 3),
            ("a; b", "a command separator `;`", 2),
            ("a > f", "a redirection `>`", 3),
            ("a < f", "a redirection `<`", 3),
            ("echo $HOME", "a variable expansion `$`", 6),
            ("echo $(date)", "a command substitution `$(...)`", 6),
            ("echo `date`", "a command substitution with backticks", 6),
            ("ls *.rs", "a glob pattern `*`", 4),
            ("ls a?", "a glob pattern `?`", 5),
            ("ls [ab]", "a glob pattern `[`", 4),
            ("cd ~/x", "a tilde expansion `~`", 4),
            ("a # note", "a comment `#`", 3),
            (
                "a\nb",
                "a newline (several commands; make one command per list entry)",
                2,
            ),
            ("(a)", "a subshell `(`", 1),
            ("if true", "the shell keyword `if`", 1),
            ("", "the command is empty", 1),
            ("echo 'a", "an unterminated single quote `'`", 6),
            ("echo \"a", "an unterminated double quote `\"`", 6),
            ("echo a\\", "a trailing backslash", 7),
        ];
        for (text, problem, position) in cases {
            let err = refused(text);
            assert_eq!(err.problem, problem, "{text:?}");
            assert_eq!(err.position, position, "{text:?}");
        }
        assert_eq!(
            refused("echo \"$HOME\"").problem,
            "an expansion `$` inside double quotes (variable or command substitution)"
        );
        let err = refused("  FOO=1 prog");
        assert_eq!(
            err.problem,
            "a variable assignment `FOO=...` (set the variable with `env:` instead)"
        );
        assert_eq!(err.position, 3);
    }

    #[test]
    fn error_says_how_to_fix() {
        let text = refused("a | b").to_string();
        assert!(text.contains("exec form"), "{text}");
        assert!(text.contains("/bin/sh"), "{text}");
    }

    #[test]
    fn exec_form_is_returned_as_is() {
        let run = Run::Exec(vec!["echo".into(), "$HOME | x".into()]);
        assert_eq!(
            run.words_without_shell(),
            Ok(vec!["echo".into(), "$HOME | x".into()])
        );
        let run = Run::Shell("echo 'hi there'".into());
        assert_eq!(
            run.words_without_shell(),
            Ok(vec!["echo".into(), "hi there".into()])
        );
    }

    #[test]
    fn env_names() {
        assert!(is_env_name("A_1"));
        assert!(is_env_name("_x"));
        assert!(!is_env_name("1A"));
        assert!(!is_env_name(""));
        assert!(!is_env_name("A-B"));
    }
}
