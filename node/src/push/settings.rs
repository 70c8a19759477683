//! A user's notification settings (`GET|PUT /settings/notifications`, at
//! the user's home node) and what they do to a push:
//!
//! - `mode: "none"`: no push at all (the job ends `sent` with no device
//!   tried; counted as `turbochat_push_suppressed_total{reason="mode_none"}`);
//! - `hide_text: true`: the push says "New message" (no text, no caption;
//!   the sender's name and the listing still show);
//! - `quiet_hours`: between `start` and `end` in the user's time zone the
//!   push is sent **silently**: no `notification` block (no banner, no
//!   sound), `data.silent = "true"` with the title and body in `data` for
//!   the app to list, the badge still set (`aps.badge` with
//!   `content-available`, Android `priority: normal`).
//!
//! Times are `"HH:MM"`; a window whose start is after its end spans
//! midnight (`22:00`–`07:00`); equal start and end is refused (a whole day
//! quiet is `mode: "none"`, or no quiet hours).

use turbochat_protocol::http::{parse_hh_mm, NotificationSettings, QuietHours};

use crate::refusal::Refusal;

/// Largest settings body read, in bytes.
pub const MAX_SETTINGS_BYTES: usize = 4096;

/// Parses and checks a `PUT /settings/notifications` body.
pub fn parse(json: &[u8]) -> Result<NotificationSettings, Refusal> {
    if json.len() > MAX_SETTINGS_BYTES {
        return Err(Refusal::invalid(format!(
            "settings are at most {MAX_SETTINGS_BYTES} bytes"
        )));
    }
    let settings: NotificationSettings = serde_json::from_slice(json)
        .map_err(|e| Refusal::invalid(format!("invalid notification settings: {e}")))?;
    if let Some(quiet) = &settings.quiet_hours {
        check_quiet_hours(quiet)?;
    }
    Ok(settings)
}

fn check_quiet_hours(quiet: &QuietHours) -> Result<(), Refusal> {
    let start = parse_hh_mm(&quiet.start)
        .ok_or_else(|| Refusal::invalid("quiet_hours.start must be \"HH:MM\" (00:00 to 23:59)"))?;
    let end = parse_hh_mm(&quiet.end)
        .ok_or_else(|| Refusal::invalid("quiet_hours.end must be \"HH:MM\" (00:00 to 23:59)"))?;
    if start == end {
        return Err(Refusal::invalid(
            "quiet_hours.start and end are equal; for no pushes at all use mode \"none\"",
        ));
    }
    jiff::tz::TimeZone::get(&quiet.time_zone).map_err(|_| {
        Refusal::invalid(format!(
            "quiet_hours.time_zone {:?} is not an IANA time zone (e.g. \"Europe/Berlin\")",
            quiet.time_zone
        ))
    })?;
    Ok(())
}

/// Whether `at_ms` (unix milliseconds) falls in the quiet hours of
/// `settings`. Settings that cannot be read (a zone this build does not
/// know) are never quiet: a push too loud beats one lost.
pub fn is_quiet(settings: &NotificationSettings, at_ms: i64) -> bool {
    let Some(quiet) = &settings.quiet_hours else {
        return false;
    };
    let (Some(start), Some(end)) = (parse_hh_mm(&quiet.start), parse_hh_mm(&quiet.end)) else {
        return false;
    };
    let Ok(zone) = jiff::tz::TimeZone::get(&quiet.time_zone) else {
        return false;
    };
    let Ok(at) = jiff::Timestamp::from_millisecond(at_ms) else {
        return false;
    };
    let local = at.to_zoned(zone);
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    if start < end {
        (start..end).contains(&minute)
    } else {
        minute >= start || minute < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbochat_protocol::http::NotifyMode;

    fn quiet(start: &str, end: &str, zone: &str) -> NotificationSettings {
        NotificationSettings {
            mode: NotifyMode::All,
            hide_text: false,
            quiet_hours: Some(QuietHours {
                start: start.into(),
                end: end.into(),
                time_zone: zone.into(),
            }),
        }
    }

    /// 2026-07-01T20:30:00Z: 22:30 in Berlin (CEST, +2), 16:30 in New York.
    const SUMMER_2030Z: i64 = 1_782_937_800_000;
    /// 2026-01-15T06:30:00Z: 07:30 in Berlin (CET, +1).
    const WINTER_0630Z: i64 = 1_768_458_600_000;

    #[test]
    fn a_window_across_midnight_in_the_users_zone() {
        let night = quiet("22:00", "07:00", "Europe/Berlin");
        assert!(is_quiet(&night, SUMMER_2030Z), "22:30 CEST");
        assert!(!is_quiet(&night, WINTER_0630Z), "07:30 CET is past the end");
        let ny = quiet("22:00", "07:00", "America/New_York");
        assert!(!is_quiet(&ny, SUMMER_2030Z), "16:30 in New York");
    }

    #[test]
    fn a_window_within_a_day_and_its_edges() {
        let lunch = quiet("22:30", "23:00", "Europe/Berlin");
        assert!(is_quiet(&lunch, SUMMER_2030Z), "the start minute is quiet");
        let before = quiet("22:31", "23:00", "Europe/Berlin");
        assert!(!is_quiet(&before, SUMMER_2030Z));
        let ended = quiet("21:00", "22:30", "Europe/Berlin");
        assert!(!is_quiet(&ended, SUMMER_2030Z), "the end minute is not");
    }

    #[test]
    fn no_quiet_hours_is_never_quiet() {
        assert!(!is_quiet(&NotificationSettings::default(), SUMMER_2030Z));
    }

    #[test]
    fn bad_bodies_are_refused_with_the_reason() {
        let err = |json: &str| parse(json.as_bytes()).unwrap_err().message.to_string();
        assert!(err(r#"{"mode":"some"}"#).contains("invalid notification settings"));
        assert!(err(r#"{"volume":3}"#).contains("unknown field"));
        assert!(
            err(r#"{"quiet_hours":{"start":"25:00","end":"07:00","time_zone":"UTC"}}"#)
                .contains("quiet_hours.start")
        );
        assert!(
            err(r#"{"quiet_hours":{"start":"22:00","end":"7:00","time_zone":"UTC"}}"#)
                .contains("quiet_hours.end")
        );
        assert!(
            err(r#"{"quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Mars/Base"}}"#)
                .contains("IANA")
        );
        assert!(
            err(r#"{"quiet_hours":{"start":"22:00","end":"22:00","time_zone":"UTC"}}"#)
                .contains("equal")
        );
        let ok = parse(
            br#"{"mode":"all","hide_text":true,"quiet_hours":{"start":"22:00","end":"07:00","time_zone":"Europe/Berlin"}}"#,
        )
        .unwrap();
        assert!(ok.hide_text);
        assert_eq!(parse(b"{}").unwrap(), NotificationSettings::default());
    }
}
