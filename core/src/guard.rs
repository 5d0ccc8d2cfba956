//! The rollback guard: a sliding window of responses and failures of the guarded
//! version (and of the baseline), and the rule that trips and re-arms it. Pure: the
//! host layer keeps one [`GuardState`] in Envoy's shared data, shared by every
//! worker thread, and merges each worker's [`Pending`] counts into it with
//! compare-and-swap; this module only does the arithmetic and the encoding.

use crate::grpc::GrpcCodeSet;
use crate::units::{format_duration, format_fixed};

/// Which responses count as failures: status classes (`5xx`) and exact codes (`429`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMatcher {
    classes: [bool; 5],
    codes: Vec<u16>,
}

impl StatusMatcher {
    /// Parses entries such as `"5xx"` or `"503"`; returns the bad entry's message.
    #[cold]
    #[inline(never)]
    pub fn parse(entries: &[String]) -> Result<StatusMatcher, (usize, String)> {
        let mut matcher = StatusMatcher {
            classes: [false; 5],
            codes: Vec::new(),
        };
        for (i, entry) in entries.iter().enumerate() {
            match entry.as_bytes() {
                [c @ b'1'..=b'5', b'x' | b'X', b'x' | b'X'] => {
                    matcher.classes[usize::from(c - b'1')] = true;
                }
                [b'1'..=b'5', b'0'..=b'9', b'0'..=b'9'] => {
                    let code = entry.parse::<u16>().map_err(|e| (i, e.to_string()))?;
                    matcher.codes.push(code);
                }
                _ => {
                    return Err((
                        i,
                        format!(
                            "`{}` is neither a status class (1xx to 5xx) nor a status code (100 to 599)",
                            crate::units::escape_text(entry, true)
                        ),
                    ))
                }
            }
        }
        Ok(matcher)
    }

    /// A response is a failure if its status matches, or if Envoy produced it
    /// locally with a 5xx because the upstream failed (reset, timeout, no healthy host).
    #[inline]
    pub fn is_failure(&self, status: u16, local_upstream_failure: bool) -> bool {
        let class = usize::from(status / 100).wrapping_sub(1);
        self.classes.get(class).copied().unwrap_or(false)
            || self.codes.contains(&status)
            || (local_upstream_failure && (500..600).contains(&status))
    }

    /// True if every 5xx already counts: then no need to ask the host whether a 5xx
    /// was generated locally.
    #[inline]
    pub fn covers_all_5xx(&self) -> bool {
        self.classes[4]
    }
}

/// The validated `guard` config.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfig {
    /// Index of the guarded version (never the baseline).
    pub version: usize,
    pub max_error_rate: f64,
    /// If set, the guarded rate must also exceed the baseline's by this much.
    pub baseline_margin: Option<f64>,
    pub min_requests: u64,
    pub window_ms: u64,
    pub status: StatusMatcher,
    /// The gRPC codes that count as failures; for a gRPC call only its code
    /// decides, `status` does not apply.
    pub grpc_status: GrpcCodeSet,
    /// `None`: stay tripped until the config changes.
    pub hold_ms: Option<u64>,
}

impl GuardConfig {
    /// True if responses of `version` count toward the guard: the guarded version,
    /// and the baseline only when `baseline_margin` compares with it. Only these
    /// responses cost the filter a `:status` read.
    #[inline]
    pub fn watches(&self, version: usize) -> bool {
        version == self.version || (version == 0 && self.baseline_margin.is_some())
    }

    /// Window slot length: 1 s, or longer for long windows so that the shared state
    /// stays at most 60 slots (about 1.5 KB).
    #[inline]
    pub fn slot_ms(&self) -> u64 {
        self.window_ms.div_ceil(60).max(1000)
    }

    #[inline]
    pub fn slot_count(&self) -> usize {
        self.window_ms.div_ceil(self.slot_ms()).max(1) as usize
    }
}

/// Responses and failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u32,
    pub failed: u32,
}

impl Tally {
    #[inline]
    pub fn add(&mut self, other: Tally) {
        self.total = self.total.saturating_add(other.total);
        self.failed = self.failed.saturating_add(other.failed);
    }

    #[inline]
    pub fn rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            f64::from(self.failed) / f64::from(self.total)
        }
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

/// What one worker counted since it last merged into the shared state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub guarded: Tally,
    pub baseline: Tally,
}

impl Pending {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.guarded.is_empty() && self.baseline.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    /// `time / slot_ms` of the slot's counts.
    pub index: u64,
    pub guarded: Tally,
    pub baseline: Tally,
}

/// The proxy-wide guard state, kept in shared data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardState {
    /// When this config's state was created: lets a reloaded config start afresh.
    pub created_ms: u64,
    /// 0 while armed; else when it tripped.
    pub tripped_at_ms: u64,
    pub slots: Vec<Slot>,
}

/// A transition, for the log line and the gauge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GuardEvent {
    Tripped { guarded: Tally, baseline: Tally },
    Rearmed,
}

impl GuardState {
    #[inline]
    pub fn new(now_ms: u64, config: &GuardConfig) -> Self {
        GuardState {
            created_ms: now_ms,
            tripped_at_ms: 0,
            slots: vec![Slot::default(); config.slot_count()],
        }
    }

    #[inline]
    pub fn is_tripped(&self) -> bool {
        self.tripped_at_ms != 0
    }

    /// Adds a worker's counts to the slot of `now_ms`.
    #[inline]
    pub fn add(&mut self, now_ms: u64, config: &GuardConfig, pending: &Pending) {
        if self.slots.is_empty() {
            return;
        }
        let index = now_ms / config.slot_ms();
        let position = (index % self.slots.len() as u64) as usize;
        let slot = &mut self.slots[position];
        if slot.index != index {
            *slot = Slot {
                index,
                ..Slot::default()
            };
        }
        slot.guarded.add(pending.guarded);
        slot.baseline.add(pending.baseline);
    }

    /// Totals over the window ending at `now_ms`.
    #[inline]
    pub fn window(&self, now_ms: u64, config: &GuardConfig) -> (Tally, Tally) {
        let current = now_ms / config.slot_ms();
        let span = self.slots.len() as u64;
        let mut guarded = Tally::default();
        let mut baseline = Tally::default();
        for slot in &self.slots {
            if slot.index <= current && current - slot.index < span {
                guarded.add(slot.guarded);
                baseline.add(slot.baseline);
            }
        }
        (guarded, baseline)
    }

    /// Applies the rule at `now_ms`: trips an armed guard whose window breaks the
    /// thresholds, re-arms a tripped one whose hold has passed.
    #[inline]
    pub fn evaluate(&mut self, now_ms: u64, config: &GuardConfig) -> Option<GuardEvent> {
        if self.is_tripped() {
            let hold = config.hold_ms?;
            if now_ms >= self.tripped_at_ms.saturating_add(hold) {
                self.tripped_at_ms = 0;
                // Start the next window clean: the failures that tripped it are history.
                for slot in &mut self.slots {
                    *slot = Slot::default();
                }
                return Some(GuardEvent::Rearmed);
            }
            return None;
        }
        let (guarded, baseline) = self.window(now_ms, config);
        let enough = u64::from(guarded.total) >= config.min_requests.max(1);
        let too_many = guarded.rate() > config.max_error_rate;
        let worse_than_baseline = config
            .baseline_margin
            .is_none_or(|margin| guarded.rate() - baseline.rate() > margin);
        if enough && too_many && worse_than_baseline {
            self.tripped_at_ms = now_ms.max(1);
            return Some(GuardEvent::Tripped { guarded, baseline });
        }
        None
    }

    const HEADER: usize = 16;
    const SLOT: usize = 24;

    /// Little-endian: created, tripped_at, then per slot index and four counts.
    #[inline]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::HEADER + self.slots.len() * Self::SLOT);
        out.extend_from_slice(&self.created_ms.to_le_bytes());
        out.extend_from_slice(&self.tripped_at_ms.to_le_bytes());
        for s in &self.slots {
            out.extend_from_slice(&s.index.to_le_bytes());
            for n in [
                s.guarded.total,
                s.guarded.failed,
                s.baseline.total,
                s.baseline.failed,
            ] {
                out.extend_from_slice(&n.to_le_bytes());
            }
        }
        out
    }

    /// The state in `bytes`, if they hold one of this config's shape.
    #[inline]
    pub fn decode(bytes: &[u8], config: &GuardConfig) -> Option<GuardState> {
        let slots = config.slot_count();
        if bytes.len() != Self::HEADER + slots * Self::SLOT {
            return None;
        }
        let u64_at = |at: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
        };
        let u32_at = |at: usize| -> Option<u32> {
            Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
        };
        let mut state = GuardState {
            created_ms: u64_at(0)?,
            tripped_at_ms: u64_at(8)?,
            slots: Vec::with_capacity(slots),
        };
        for i in 0..slots {
            let at = Self::HEADER + i * Self::SLOT;
            state.slots.push(Slot {
                index: u64_at(at)?,
                guarded: Tally {
                    total: u32_at(at + 8)?,
                    failed: u32_at(at + 12)?,
                },
                baseline: Tally {
                    total: u32_at(at + 16)?,
                    failed: u32_at(at + 20)?,
                },
            });
        }
        Some(state)
    }
}

/// The log line of a transition: the figures that tripped it, and what happens now.
#[cold]
#[inline(never)]
pub fn describe(event: &GuardEvent, config: &GuardConfig, guarded: &str, baseline: &str) -> String {
    match event {
        GuardEvent::Tripped {
            guarded: g,
            baseline: b,
        } => {
            let hold = config
                .hold_ms
                .map_or("until the config changes".to_string(), |ms| {
                    format!("for {}", format_duration(ms))
                });
            // The baseline is counted only when baseline_margin compares with it.
            let compared = if config.baseline_margin.is_some() {
                format!(
                    " (baseline {baseline}: {} of {}, {}%)",
                    b.failed,
                    b.total,
                    format_fixed(100.0 * b.rate(), 2)
                )
            } else {
                String::new()
            };
            format!(
                "guard tripped: {guarded} failed {} of {} responses ({}%) in the last {}, above max_error_rate {}%\
                 {compared}; sending {guarded}'s traffic to {baseline} {hold}; overrides still reach {guarded}",
                g.failed,
                g.total,
                format_fixed(100.0 * g.rate(), 2),
                format_duration(config.window_ms),
                format_fixed(100.0 * config.max_error_rate, 2),
            )
        }
        GuardEvent::Rearmed => {
            format!("guard re-armed: {guarded} gets its configured weight again")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> GuardConfig {
        GuardConfig {
            version: 1,
            max_error_rate: 0.05,
            baseline_margin: None,
            min_requests: 50,
            window_ms: 30_000,
            status: StatusMatcher::parse(&["5xx".to_string()]).unwrap(),
            grpc_status: GrpcCodeSet::default(),
            hold_ms: Some(600_000),
        }
    }

    fn pending(total: u32, failed: u32) -> Pending {
        Pending {
            guarded: Tally { total, failed },
            baseline: Tally::default(),
        }
    }

    const T0: u64 = 1_800_000_000_000;

    #[test]
    fn the_guard_watches_the_baseline_only_when_it_compares_with_it() {
        let c = config();
        assert!(c.watches(1) && !c.watches(0) && !c.watches(2));
        let margin = GuardConfig {
            baseline_margin: Some(0.02),
            ..config()
        };
        assert!(margin.watches(1) && margin.watches(0) && !margin.watches(2));
    }

    #[test]
    fn status_entries_match_classes_codes_and_local_failures() {
        let m = StatusMatcher::parse(&["5xx".into(), "429".into()]).unwrap();
        assert!(m.is_failure(500, false) && m.is_failure(503, false) && m.is_failure(429, false));
        assert!(
            !m.is_failure(200, false) && !m.is_failure(404, false) && !m.is_failure(430, false)
        );
        let only_500 = StatusMatcher::parse(&["500".into()]).unwrap();
        assert!(!only_500.is_failure(503, false));
        assert!(
            only_500.is_failure(503, true),
            "a local 503 after an upstream failure counts"
        );
        assert!(!only_500.is_failure(404, true));
        assert!(!only_500.covers_all_5xx() && m.covers_all_5xx());
        assert_eq!(
            StatusMatcher::parse(&["5XX".into()]).unwrap(),
            StatusMatcher::parse(&["5xx".into()]).unwrap()
        );
        for bad in ["6xx", "50", "600", "099", "5xxx", "", "abc"] {
            assert!(StatusMatcher::parse(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        assert_eq!(
            StatusMatcher::parse(&["5xx".into(), "x".into()])
                .unwrap_err()
                .0,
            1
        );
    }

    #[test]
    fn it_trips_only_with_enough_requests_above_the_rate() {
        let c = config();
        let mut s = GuardState::new(T0, &c);
        s.add(T0, &c, &pending(49, 49));
        assert_eq!(s.evaluate(T0, &c), None, "49 < min_requests");
        s.add(T0 + 10, &c, &pending(1, 0));
        match s.evaluate(T0 + 10, &c) {
            Some(GuardEvent::Tripped { guarded, .. }) => assert_eq!(
                guarded,
                Tally {
                    total: 50,
                    failed: 49
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(s.is_tripped());
        assert_eq!(s.evaluate(T0 + 20, &c), None, "trips once");
    }

    #[test]
    fn the_rate_must_exceed_the_threshold_strictly() {
        let c = config();
        let mut s = GuardState::new(T0, &c);
        s.add(T0, &c, &pending(100, 5));
        assert_eq!(s.evaluate(T0, &c), None, "5% is not above 5%");
        s.add(T0, &c, &pending(1, 1));
        assert!(matches!(
            s.evaluate(T0, &c),
            Some(GuardEvent::Tripped { .. })
        ));
    }

    #[test]
    fn failures_older_than_the_window_slide_out() {
        let c = config();
        let mut s = GuardState::new(T0, &c);
        s.add(T0, &c, &pending(40, 40));
        // 31 s later the old slot is outside the 30 s window.
        let later = T0 + 31_000;
        s.add(later, &c, &pending(20, 0));
        assert_eq!(
            s.window(later, &c).0,
            Tally {
                total: 20,
                failed: 0
            }
        );
        assert_eq!(s.evaluate(later, &c), None);
        // Within the window they add up.
        let mut s = GuardState::new(T0, &c);
        s.add(T0, &c, &pending(40, 40));
        s.add(T0 + 29_000, &c, &pending(20, 0));
        assert_eq!(
            s.window(T0 + 29_000, &c).0,
            Tally {
                total: 60,
                failed: 40
            }
        );
        assert!(s.evaluate(T0 + 29_000, &c).is_some());
    }

    #[test]
    fn a_reused_slot_forgets_its_old_counts() {
        let c = config();
        let mut s = GuardState::new(T0, &c);
        s.add(T0, &c, &pending(40, 40));
        let same_position = T0 + 30_000; // 30 slots later: the same ring position
        s.add(same_position, &c, &pending(3, 0));
        assert_eq!(
            s.window(same_position, &c).0,
            Tally {
                total: 3,
                failed: 0
            }
        );
    }

    #[test]
    fn it_re_arms_after_hold_with_a_clean_window_or_never_with_forever() {
        let c = config();
        let mut s = GuardState::new(T0, &c);
        s.add(T0, &c, &pending(60, 60));
        assert!(s.evaluate(T0, &c).is_some());
        assert_eq!(s.evaluate(T0 + 599_999, &c), None);
        assert_eq!(s.evaluate(T0 + 600_000, &c), Some(GuardEvent::Rearmed));
        assert!(!s.is_tripped());
        assert_eq!(s.window(T0 + 600_000, &c).0, Tally::default());
        assert_eq!(
            s.evaluate(T0 + 600_001, &c),
            None,
            "old failures do not re-trip it"
        );

        let forever = GuardConfig {
            hold_ms: None,
            ..config()
        };
        let mut s = GuardState::new(T0, &forever);
        s.add(T0, &forever, &pending(60, 60));
        assert!(s.evaluate(T0, &forever).is_some());
        assert_eq!(s.evaluate(u64::MAX, &forever), None);
        assert!(s.is_tripped());
    }

    #[test]
    fn a_baseline_margin_spares_the_canary_when_both_fail() {
        let c = GuardConfig {
            baseline_margin: Some(0.02),
            ..config()
        };
        let mut s = GuardState::new(T0, &c);
        let both_failing = Pending {
            guarded: Tally {
                total: 100,
                failed: 30,
            },
            baseline: Tally {
                total: 1000,
                failed: 290,
            },
        };
        s.add(T0, &c, &both_failing);
        assert_eq!(s.evaluate(T0, &c), None, "30% vs 29%: within the margin");
        s.add(T0, &c, &pending(100, 60));
        assert!(s.evaluate(T0, &c).is_some(), "45% vs 29%: beyond it");
    }

    #[test]
    fn long_windows_use_at_most_60_slots() {
        let c = GuardConfig {
            window_ms: 600_000,
            ..config()
        };
        assert_eq!(c.slot_ms(), 10_000);
        assert_eq!(c.slot_count(), 60);
        assert_eq!(config().slot_ms(), 1000);
        assert_eq!(config().slot_count(), 30);
        let short = GuardConfig {
            window_ms: 2500,
            ..config()
        };
        assert_eq!((short.slot_ms(), short.slot_count()), (1000, 3));
    }

    #[test]
    fn the_state_round_trips_through_bytes_and_rejects_other_shapes() {
        let c = config();
        let mut s = GuardState::new(T0, &c);
        s.add(
            T0,
            &c,
            &Pending {
                guarded: Tally {
                    total: 7,
                    failed: 3,
                },
                baseline: Tally {
                    total: 70,
                    failed: 1,
                },
            },
        );
        s.add(T0 + 5000, &c, &pending(2, 2));
        s.tripped_at_ms = T0 + 1;
        let bytes = s.encode();
        assert_eq!(GuardState::decode(&bytes, &c), Some(s));
        assert_eq!(GuardState::decode(&bytes[..bytes.len() - 1], &c), None);
        assert_eq!(GuardState::decode(&[], &c), None);
        let other = GuardConfig {
            window_ms: 10_000,
            ..config()
        };
        assert_eq!(GuardState::decode(&bytes, &other), None);
    }

    #[test]
    fn the_trip_line_gives_the_figures() {
        let c = GuardConfig {
            baseline_margin: Some(0.02),
            ..config()
        };
        let line = describe(
            &GuardEvent::Tripped {
                guarded: Tally {
                    total: 60,
                    failed: 12,
                },
                baseline: Tally {
                    total: 600,
                    failed: 3,
                },
            },
            &c,
            "canary",
            "stable",
        );
        assert_eq!(
            line,
            "guard tripped: canary failed 12 of 60 responses (20.00%) in the last 30s, above max_error_rate 5.00% \
             (baseline stable: 3 of 600, 0.50%); sending canary's traffic to stable for 10m; overrides still reach canary"
        );
        // Without baseline_margin the baseline is not counted, so not reported.
        let without_margin = describe(
            &GuardEvent::Tripped {
                guarded: Tally {
                    total: 60,
                    failed: 12,
                },
                baseline: Tally::default(),
            },
            &config(),
            "canary",
            "stable",
        );
        assert_eq!(
            without_margin,
            "guard tripped: canary failed 12 of 60 responses (20.00%) in the last 30s, above max_error_rate 5.00%; \
             sending canary's traffic to stable for 10m; overrides still reach canary"
        );
        let forever = GuardConfig {
            hold_ms: None,
            ..config()
        };
        assert!(describe(
            &GuardEvent::Tripped {
                guarded: Tally::default(),
                baseline: Tally::default()
            },
            &forever,
            "c",
            "s"
        )
        .contains("until the config changes"));
    }
}
