//! The value types settings are written in: durations (`30d`), sizes (`64MiB`), model name
//! patterns, and secrets that never print; each read the same from a flag, the environment and
//! the file.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;

/// A URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:*****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A duration written `500ms`, `90s`, `10m`, `12h`, `30d`, or a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("not a duration: {s:?}"))?;
        let ms = match unit.trim() {
            "ms" => 1,
            "" | "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("unknown unit in {s:?}; use ms, s, m, h or d")),
        };
        Ok(HumanDuration(Duration::from_millis(n.saturating_mul(ms))))
    }
}

/// A size written `1024`, `64KiB`, `64MiB`, `1GiB` (or KB/MB/GB, read as powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("not a size: {s:?}"))?;
        let mul: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(format!("unknown unit in {s:?}; use B, KiB, MiB or GiB")),
        };
        Ok(ByteSize(n.saturating_mul(mul)))
    }
}

/// Model names as patterns: `*` matches any run of characters, case is ignored. Written as a
/// comma-separated list on the command line, as a list (or the same string) in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPatterns(Vec<String>);

impl ModelPatterns {
    /// The families that do not reason: they refuse reasoning items and encrypted reasoning.
    pub fn non_reasoning() -> Self {
        Self(
            ["gpt-4*", "gpt-3.5*", "chatgpt-*", "*-chat*"]
                .map(String::from)
                .to_vec(),
        )
    }

    /// Whether `model` matches one of the patterns.
    pub fn matches(&self, model: &str) -> bool {
        self.0.iter().any(|p| glob(p.as_bytes(), model.as_bytes()))
    }
}

/// `*`-only wildcard matching, ASCII case ignored, without recursion blow-up (greedy with backtracking to the last
/// star).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p].eq_ignore_ascii_case(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

impl fmt::Display for ModelPatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl FromStr for ModelPatterns {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(Self(
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
        ))
    }
}

impl<'de> Deserialize<'de> for ModelPatterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            List(Vec<String>),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::List(list) => Ok(Self(list)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A secret: shown as `*****` in every debug and log output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        Ok(Secret(s.to_owned()))
    }
}

/// Numbers or strings in the file, parsed like the flag.
macro_rules! deserialize_via_from_str {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Raw {
                    N(u64),
                    S(String),
                }
                let text = match Raw::deserialize(d)? {
                    Raw::N(n) => n.to_string(),
                    Raw::S(s) => s,
                };
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
deserialize_via_from_str!(HumanDuration);
deserialize_via_from_str!(ByteSize);
deserialize_via_from_str!(Secret);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Repair,
    Observe,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// What becomes of a call the request gives no output (N1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum UnansweredCalls {
    /// Forwarded as it is (the API refuses it: `No tool output found for …`).
    #[default]
    Refuse,
    /// An output saying the call was interrupted is added right after the call's group.
    Answer,
}
