//! Streams: what a topic with history keeps, and what a broker answers when it is read.
//!
//! A stream holds the newest publications of one topic, each with its offset (1, 2, 3 … without
//! gaps) and kept at most `ttl`; its epoch names this particular past, and changes when it is lost.
//! `MemoryStreams` is the in-process store of the memory broker; the Redis broker keeps the same
//! thing in Redis.

use crate::ws::Text;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How much of a topic's past a history channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Publications kept per topic (the newest).
    pub size: usize,
    /// How long a publication is kept.
    pub ttl: Duration,
}

/// Where a stream is: the offset of its newest publication (0 before the first) and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The newest publication's offset.
    pub offset: u64,
    /// Changes whenever the stream's past is lost.
    pub epoch: String,
}

/// A read of a stream.
#[derive(Debug, Clone)]
pub struct StreamRead {
    /// The stream's position when it was read.
    pub position: StreamPosition,
    /// The publications read, oldest first: each its offset and its encoded `data` message.
    pub publications: Vec<(u64, Text)>,
    /// True if nothing between the requested `since` and the first publication read was trimmed
    /// (always true without `since`).
    pub complete: bool,
}

/// A fresh epoch: 8 random letters and digits.
pub(crate) fn new_epoch() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..8)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect()
}

/// One topic's stream in memory.
struct Stream {
    epoch: String,
    /// The newest offset.
    offset: u64,
    /// Kept publications: offset, when published, the message.
    entries: VecDeque<(u64, Instant, Text)>,
    /// The last publish (a stream idle past its ttl is forgotten).
    touched: Instant,
}

impl Stream {
    fn new(now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            offset: 0,
            entries: VecDeque::new(),
            touched: now,
        }
    }

    fn trim(&mut self, policy: HistoryPolicy, now: Instant) {
        while self.entries.len() > policy.size {
            self.entries.pop_front();
        }
        while self
            .entries
            .front()
            .is_some_and(|(_, at, _)| now.duration_since(*at) > policy.ttl)
        {
            self.entries.pop_front();
        }
        if self.entries.capacity() > 2 * self.entries.len() + 8 {
            self.entries.shrink_to_fit();
        }
    }
}

/// The memory broker's streams, by topic.
#[derive(Default)]
pub(crate) struct MemoryStreams {
    streams: HashMap<String, Stream>,
    /// Publications since the last sweep of idle streams.
    since_sweep: usize,
}

impl MemoryStreams {
    /// Appends `head` with the next offset; returns the offset and the complete message.
    pub fn append(&mut self, topic: &str, head: &str, policy: HistoryPolicy) -> (u64, Text) {
        let now = Instant::now();
        self.sweep(now, policy);
        let stream = self.current(topic, policy, now);
        stream.offset += 1;
        stream.touched = now;
        let offset = stream.offset;
        let message = Text::from(format!("{head},\"offset\":{offset}}}"));
        stream.entries.push_back((offset, now, message.clone()));
        stream.trim(policy, now);
        (offset, message)
    }

    /// Reads a stream (see [`super::Broker::read_stream`]).
    pub fn read(&mut self, topic: &str, since: Option<u64>, limit: usize, policy: HistoryPolicy) -> StreamRead {
        let now = Instant::now();
        let stream = self.current(topic, policy, now);
        stream.trim(policy, now);
        let position = StreamPosition {
            offset: stream.offset,
            epoch: stream.epoch.clone(),
        };
        let after = since.unwrap_or(0);
        let kept: Vec<&(u64, Instant, Text)> = stream.entries.iter().filter(|(o, _, _)| *o > after).collect();
        let first_kept = kept.first().map(|(o, _, _)| *o);
        // Complete if the first publication after `since` is kept (or there is none after it).
        let complete = match since {
            None => true,
            Some(since) => since >= stream.offset || first_kept == Some(since + 1),
        };
        let chosen: Vec<(u64, Text)> = if since.is_some() {
            kept.iter().take(limit).map(|(o, _, m)| (*o, m.clone())).collect()
        } else {
            let skip = kept.len().saturating_sub(limit);
            kept.iter().skip(skip).map(|(o, _, m)| (*o, m.clone())).collect()
        };
        StreamRead {
            position,
            publications: chosen,
            complete,
        }
    }

    /// The streams held, and the publications kept in them.
    pub fn sizes(&self) -> (usize, usize) {
        let kept = self.streams.values().map(|stream| stream.entries.len()).sum();
        (self.streams.len(), kept)
    }

    /// The stream of `topic`: a new one (new epoch) if there is none, or if it was idle past its
    /// ttl with nothing left (its past is gone).
    fn current(&mut self, topic: &str, policy: HistoryPolicy, now: Instant) -> &mut Stream {
        let stream = self.streams.entry(topic.to_owned()).or_insert_with(|| Stream::new(now));
        if stream.entries.is_empty() && now.duration_since(stream.touched) > policy.ttl {
            *stream = Stream::new(now);
        }
        stream
    }

    /// Every 1024 publications, forgets streams idle past their ttl: memory stays bounded by the
    /// topics published to recently. (A stream's epoch dies with it, so a client still holding
    /// its offsets is told `recovered: false`.)
    fn sweep(&mut self, now: Instant, policy: HistoryPolicy) {
        self.since_sweep += 1;
        if self.since_sweep < 1024 {
            return;
        }
        self.since_sweep = 0;
        self.streams
            .retain(|_, stream| now.duration_since(stream.touched) <= policy.ttl || !stream.entries.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: HistoryPolicy = HistoryPolicy {
        size: 3,
        ttl: Duration::from_secs(300),
    };

    #[test]
    fn offsets_are_consecutive_and_the_message_ends_with_its_offset() {
        let mut streams = MemoryStreams::default();
        let (one, message) = streams.append("t", r#"{"type":"data","channel":"t","data":1"#, POLICY);
        assert_eq!(
            (one, message.as_str()),
            (1, r#"{"type":"data","channel":"t","data":1,"offset":1}"#)
        );
        assert_eq!(streams.append("t", "{", POLICY).0, 2);
        assert_eq!(
            streams.append("other", "{", POLICY).0,
            1,
            "each topic has its own stream"
        );
    }

    #[test]
    fn reads_report_trimmed_pasts_as_incomplete() {
        let mut streams = MemoryStreams::default();
        for _ in 0..5 {
            streams.append("t", "{", POLICY);
        }
        // Size 3: offsets 3, 4, 5 are kept.
        let read = streams.read("t", Some(2), 10, POLICY);
        assert!(read.complete);
        assert_eq!(read.publications.iter().map(|p| p.0).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(read.position.offset, 5);
        let read = streams.read("t", Some(1), 10, POLICY);
        assert!(!read.complete, "offset 2 was trimmed");
        let latest = streams.read("t", None, 2, POLICY);
        assert_eq!(latest.publications.iter().map(|p| p.0).collect::<Vec<_>>(), vec![4, 5]);
        let none = streams.read("t", Some(5), 10, POLICY);
        assert!(none.complete && none.publications.is_empty());
        assert_eq!(streams.read("t", None, 0, POLICY).position.epoch, latest.position.epoch);
    }
}
