//! Problems found while a configuration is read, each with its path in the file (`Issues`);
//! every component's `validate()` writes into one.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects issues while a configuration is read.
#[derive(Default)]
pub struct Issues(Vec<ConfigIssue>);

impl Issues {
    /// Records a problem. One mistake reads as one error: a value already reported (an
    /// unresolved `${env:...}`, say) is not reported again when it then fails to parse.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.0.iter().any(|i| i.path == path) {
            return;
        }
        self.0.push(ConfigIssue { path, message: message.into() });
    }

    /// What was recorded so far.
    pub fn found(&self) -> &[ConfigIssue] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<ConfigIssue> {
        self.0
    }

    /// Whether anything at or below `path` was reported.
    pub fn reported_under(&self, path: &str) -> bool {
        self.0.iter().any(|i| i.path == path || i.path.strip_prefix(path).is_some_and(|rest| rest.starts_with('.')))
    }
}
