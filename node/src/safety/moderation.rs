//! Moderation before a message is stored: rules that look for contact
//! details (phone numbers, e-mail addresses, links) or listed words and
//! patterns in a message's text, each with an action — refuse the message,
//! mask what was found, or store it and flag it for review.
//!
//! Pure: [`Moderator::screen`] takes a text and says what to do with it; the
//! owner applies the verdict before the send joins a batch, so a refused
//! message is never stored and a masked one is stored masked (nobody, not
//! even the history, ever holds the original).

use std::borrow::Cow;

use regex::{Regex, RegexBuilder};
use serde::Deserialize;

/// What a rule looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detect {
    /// A phone number: 8 to 15 digits, possibly with a leading `+` and
    /// spaces, dots, dashes, slashes or parentheses between them (prices and
    /// mileages, at most 7 digits, do not match).
    Phone,
    /// An e-mail address, also written `name (at) host.tld` or `name [at] host.tld`.
    Email,
    /// A link: `http(s)://...`, `www....`, or a bare domain with a common
    /// top-level domain (`example.com/path`).
    Link,
    /// Any of `words`, as whole words, case-insensitively.
    Words,
    /// The regular expression `pattern` (Rust `regex` syntax; case-sensitive
    /// unless it says `(?i)`).
    Regex,
}

/// What a rule does with a message it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// The send is refused with `content_refused`; nothing is stored.
    Refuse,
    /// Each match is replaced by `mask` (default `***`) and the message is
    /// stored masked.
    Mask,
    /// The message is stored as sent and a report (reporter
    /// `system:moderation`, reason `moderation`) is opened for review.
    Flag,
}

/// One rule as configured (`[[moderation.rules]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Names the rule in refusals, reports and metrics.
    pub name: String,
    /// What to look for.
    pub detect: Detect,
    /// What to do on a match.
    pub action: Action,
    /// For `detect = "words"`: the words (or phrases).
    #[serde(default)]
    pub words: Vec<String>,
    /// For `detect = "regex"`: the pattern.
    #[serde(default)]
    pub pattern: Option<String>,
    /// For `action = "mask"`: what replaces each match.
    #[serde(default)]
    pub mask: Option<String>,
    /// For `action = "refuse"`: the message the sender reads (default:
    /// says what was found).
    #[serde(default)]
    pub message: Option<String>,
}

/// `[moderation]`: the rules, applied in order. None by default: a fresh
/// install stores what users send.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModerationConfig {
    /// The rules.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// The HTTP hook asked after the rules (none by default).
    #[serde(default)]
    pub hook: Option<super::hook::HookConfig>,
}

/// A rule that cannot be used (names its index and why).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("moderation.rules[{index}]: {reason}")]
pub struct RuleError {
    /// Position in `[[moderation.rules]]`, from 0.
    pub index: usize,
    /// Why.
    pub reason: String,
}

const PHONE: &str = r"(?:\+|\b)\d(?:[\s\-./()]{0,2}\d){7,14}\b";
const EMAIL: &str =
    r"(?i)[a-z0-9._%+\-]+\s*(?:@|\(at\)|\[at\])\s*[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\.[a-z]{2,}";
const LINK: &str = r"(?i)\b(?:https?://|www\.)[^\s<>]+|\b[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?\.(?:com|net|org|io|me|ly|gl|app|info|biz|co|ru|de|fr|it|es|nl|pl|uk|us|eu|tk|xyz|link|click|shop|online|site)\b(?:/[^\s<>]*)?";
const DEFAULT_MASK: &str = "***";
/// Longest compiled program of a configured pattern, in bytes.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A compiled rule.
#[derive(Debug, Clone)]
struct Rule {
    name: String,
    detect: Detect,
    action: Action,
    regex: Regex,
    mask: String,
    message: Option<String>,
}

/// The compiled rules.
#[derive(Debug, Clone, Default)]
pub struct Moderator {
    rules: Vec<Rule>,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Store it as it is (perhaps masked), flagged by the rules named.
    Store {
        /// The text to store: borrowed when unchanged.
        body: Cow<'a, str>,
        /// Names of the `flag` rules that matched.
        flagged: Vec<String>,
    },
    /// Refuse it; nothing is stored.
    Refuse {
        /// The rule that refused it.
        rule: String,
        /// What the sender reads.
        message: String,
    },
}

impl Moderator {
    /// Compiles the configured rules; the first unusable one is the error.
    pub fn new(config: &ModerationConfig) -> Result<Self, RuleError> {
        let rules = config
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| compile(rule).map_err(|reason| RuleError { index, reason }))
            .collect::<Result<_, _>>()?;
        Ok(Moderator { rules })
    }

    /// Whether any rule is configured.
    pub fn is_active(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Applies every rule to `body`, in order: a `refuse` rule that matches
    /// decides at once; `mask` rules rewrite the text the later rules see;
    /// `flag` rules are collected.
    pub fn screen<'a>(&self, body: &'a str) -> Verdict<'a> {
        let mut text: Cow<'a, str> = Cow::Borrowed(body);
        let mut flagged = Vec::new();
        for rule in &self.rules {
            if !rule.regex.is_match(&text) {
                continue;
            }
            metrics::counter!("turbochat_moderation_matches_total", "rule" => rule.name.clone())
                .increment(1);
            match rule.action {
                Action::Refuse => {
                    return Verdict::Refuse {
                        rule: rule.name.clone(),
                        message: rule.message.clone().unwrap_or_else(|| {
                            format!(
                                "this message cannot be sent: it contains {} (rule {:?})",
                                what(rule.detect),
                                rule.name
                            )
                        }),
                    }
                }
                Action::Mask => {
                    let masked = rule.regex.replace_all(&text, rule.mask.as_str());
                    text = Cow::Owned(masked.into_owned());
                }
                Action::Flag => flagged.push(rule.name.clone()),
            }
        }
        Verdict::Store {
            body: text,
            flagged,
        }
    }
}

fn what(detect: Detect) -> &'static str {
    match detect {
        Detect::Phone => "a phone number",
        Detect::Email => "an e-mail address",
        Detect::Link => "a link",
        Detect::Words => "a word that is not allowed",
        Detect::Regex => "text that is not allowed",
    }
}

fn compile(rule: &RuleConfig) -> Result<Rule, String> {
    if rule.name.trim().is_empty() {
        return Err("name must not be empty".into());
    }
    let pattern: Cow<'_, str> = match rule.detect {
        Detect::Phone => PHONE.into(),
        Detect::Email => EMAIL.into(),
        Detect::Link => LINK.into(),
        Detect::Words => {
            let words: Vec<String> = rule
                .words
                .iter()
                .map(|w| w.trim())
                .filter(|w| !w.is_empty())
                .map(|w| {
                    regex::escape(w)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(r"\s+")
                })
                .collect();
            if words.is_empty() {
                return Err("detect = \"words\" needs a non-empty `words` list".into());
            }
            format!(r"(?i)\b(?:{})\b", words.join("|")).into()
        }
        Detect::Regex => match rule.pattern.as_deref() {
            Some(p) if !p.is_empty() => p.into(),
            _ => return Err("detect = \"regex\" needs a `pattern`".into()),
        },
    };
    if rule.detect != Detect::Words && !rule.words.is_empty() {
        return Err("`words` is only for detect = \"words\"".into());
    }
    if rule.detect != Detect::Regex && rule.pattern.is_some() {
        return Err("`pattern` is only for detect = \"regex\"".into());
    }
    if rule.action != Action::Mask && rule.mask.is_some() {
        return Err("`mask` is only for action = \"mask\"".into());
    }
    let regex = RegexBuilder::new(&pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("pattern does not compile: {e}"))?;
    Ok(Rule {
        name: rule.name.clone(),
        detect: rule.detect,
        action: rule.action,
        regex,
        mask: rule.mask.clone().unwrap_or_else(|| DEFAULT_MASK.into()),
        message: rule.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, detect: Detect, action: Action) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            detect,
            action,
            words: Vec::new(),
            pattern: None,
            mask: None,
            message: None,
        }
    }

    fn moderator(rules: Vec<RuleConfig>) -> Moderator {
        Moderator::new(&ModerationConfig { rules, hook: None }).expect("rules compile")
    }

    fn refused(m: &Moderator, text: &str) -> bool {
        matches!(m.screen(text), Verdict::Refuse { .. })
    }

    #[test]
    fn no_rules_store_everything_unchanged() {
        let m = moderator(vec![]);
        assert!(!m.is_active());
        assert_eq!(
            m.screen("call +33 6 12 34 56 78"),
            Verdict::Store {
                body: Cow::Borrowed("call +33 6 12 34 56 78"),
                flagged: vec![]
            }
        );
    }

    #[test]
    fn phone_numbers_are_found_in_their_usual_shapes_but_prices_are_not() {
        let m = moderator(vec![rule("phone", Detect::Phone, Action::Refuse)]);
        for text in [
            "call me on +33 6 12 34 56 78",
            "0612345678",
            "06.12.34.56.78",
            "(555) 123-4567 after six",
            "+1-202-555-0143",
            "my number 0176 12345678",
        ] {
            assert!(refused(&m, text), "{text}");
        }
        for text in [
            "price is 12500 euros",
            "it has 145 000 km",
            "built in 2017, 2 owners",
            "can you do 9,500?",
            "hello",
        ] {
            assert!(!refused(&m, text), "{text}");
        }
    }

    #[test]
    fn email_addresses_are_found_also_when_disguised() {
        let m = moderator(vec![rule("email", Detect::Email, Action::Refuse)]);
        assert!(refused(&m, "write to jo.smith+car@example.co.uk"));
        assert!(refused(&m, "jo (at) example.com"));
        assert!(refused(&m, "jo [at] mail.example.org please"));
        assert!(!refused(&m, "meet at the station at 5"));
    }

    #[test]
    fn links_are_found_with_or_without_a_scheme() {
        let m = moderator(vec![rule("link", Detect::Link, Action::Refuse)]);
        assert!(refused(&m, "see https://pay.example/x?y=1"));
        assert!(refused(&m, "go to www.example.org"));
        assert!(refused(&m, "pay on safe-deal.com/checkout"));
        assert!(!refused(&m, "the car is fine. ok?"));
        assert!(!refused(&m, "v2.0 of the app"));
    }

    #[test]
    fn masking_replaces_every_match_and_later_rules_see_the_masked_text() {
        let mut mask = rule("phone", Detect::Phone, Action::Mask);
        mask.mask = Some("[hidden]".into());
        let m = moderator(vec![
            mask,
            rule("phone-after-mask", Detect::Phone, Action::Refuse),
        ]);
        assert_eq!(
            m.screen("a 0612345678 b 0798765432"),
            Verdict::Store {
                body: Cow::Owned("a [hidden] b [hidden]".into()),
                flagged: vec![]
            }
        );
    }

    #[test]
    fn refuse_wins_and_flags_are_collected() {
        let mut words = rule("scam-words", Detect::Words, Action::Flag);
        words.words = vec!["western union".into(), "Gift Card".into()];
        let mut refuse = rule("link", Detect::Link, Action::Refuse);
        refuse.message = Some("links are not allowed".into());
        let m = moderator(vec![words, refuse]);
        assert_eq!(
            m.screen("pay by Western   Union please"),
            Verdict::Store {
                body: Cow::Borrowed("pay by Western   Union please"),
                flagged: vec!["scam-words".into()]
            }
        );
        assert_eq!(
            m.screen("gift card at www.x.com"),
            Verdict::Refuse {
                rule: "link".into(),
                message: "links are not allowed".into()
            }
        );
        assert!(!refused(&m, "a giftcard"), "whole words only");
    }

    #[test]
    fn a_custom_pattern_is_used_as_written() {
        let mut custom = rule("whatsapp", Detect::Regex, Action::Refuse);
        custom.pattern = Some(r"(?i)whats\s*app".into());
        let m = moderator(vec![custom]);
        assert!(refused(&m, "add me on WhatsApp"));
        assert!(!refused(&m, "what is up"));
    }

    #[test]
    fn unusable_rules_are_refused_by_their_index() {
        let mut bad = rule("re", Detect::Regex, Action::Flag);
        bad.pattern = Some("(".into());
        let err = Moderator::new(&ModerationConfig {
            rules: vec![rule("ok", Detect::Phone, Action::Flag), bad],
            hook: None,
        })
        .unwrap_err();
        assert_eq!(err.index, 1);
        assert!(err.reason.contains("does not compile"), "{err}");
        let empty_words = rule("w", Detect::Words, Action::Flag);
        assert!(Moderator::new(&ModerationConfig {
            rules: vec![empty_words],
            hook: None,
        })
        .is_err());
        let mut stray = rule("p", Detect::Phone, Action::Refuse);
        stray.mask = Some("x".into());
        assert!(Moderator::new(&ModerationConfig {
            rules: vec![stray],
            hook: None,
        })
        .is_err());
    }
}
