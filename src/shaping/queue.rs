//! The waiting line in front of one lane: priority classes, and within a class one request per
//! caller in turn (round robin over callers), so a caller with a thousand queued requests delays
//! another caller's next request by one of them, not by a thousand.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Priority classes, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// A person waiting in the editor; streams are interactive unless their key says otherwise.
    Interactive,
    /// Pipelines and bulk jobs: served when no interactive request waits.
    Batch,
}

impl Class {
    pub const ALL: [Class; 2] = [Class::Interactive, Class::Batch];

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Interactive => "interactive",
            Class::Batch => "batch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct ClassLine {
    /// Callers with something waiting, in turn order.
    turn: VecDeque<Arc<str>>,
    /// Each caller's waiting tickets, oldest first.
    tickets: HashMap<Arc<str>, VecDeque<u64>>,
}

#[derive(Debug, Default)]
pub struct Line {
    classes: [ClassLine; 2],
    len: usize,
    next: u64,
}

impl Line {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len_of(&self, class: Class) -> usize {
        self.classes[class.index()]
            .tickets
            .values()
            .map(VecDeque::len)
            .sum()
    }

    /// Queues a request; the ticket identifies it.
    pub fn push(&mut self, class: Class, caller: &Arc<str>) -> u64 {
        let id = self.next;
        self.next += 1;
        let line = &mut self.classes[class.index()];
        let mine = line.tickets.entry(Arc::clone(caller)).or_default();
        if mine.is_empty() {
            line.turn.push_back(Arc::clone(caller));
        }
        mine.push_back(id);
        self.len += 1;
        id
    }

    /// The ticket served next: the most urgent class with a waiter, the caller whose turn it
    /// is, that caller's oldest request.
    pub fn head(&self) -> Option<u64> {
        self.classes.iter().find_map(|line| {
            let caller = line.turn.front()?;
            line.tickets.get(caller)?.front().copied()
        })
    }

    /// Removes the head; its caller's turn passes to the next caller.
    pub fn pop_head(&mut self) {
        let Some(line) = self.classes.iter_mut().find(|l| !l.turn.is_empty()) else {
            return;
        };
        let Some(caller) = line.turn.pop_front() else {
            return;
        };
        if let Some(mine) = line.tickets.get_mut(&caller) {
            mine.pop_front();
            self.len -= 1;
            if mine.is_empty() {
                line.tickets.remove(&caller);
            } else {
                line.turn.push_back(caller);
            }
        }
    }

    /// Removes a ticket that is being served now; if its caller's turn was up, the turn passes
    /// on, as with [`Line::pop_head`]. Used when the head may have changed while the ticket
    /// was being admitted (a more urgent request arrived meanwhile).
    pub fn served(&mut self, class: Class, caller: &Arc<str>, id: u64) {
        let line = &mut self.classes[class.index()];
        let had_turn = line.turn.front() == Some(caller);
        self.remove(class, caller, id);
        let line = &mut self.classes[class.index()];
        if had_turn
            && line.tickets.contains_key(caller)
            && let Some(c) = line.turn.pop_front()
        {
            line.turn.push_back(c);
        }
    }

    /// Removes a ticket that stopped waiting (timed out, or its request went away).
    pub fn remove(&mut self, class: Class, caller: &Arc<str>, id: u64) {
        let line = &mut self.classes[class.index()];
        let Some(mine) = line.tickets.get_mut(caller) else {
            return;
        };
        let before = mine.len();
        mine.retain(|t| *t != id);
        self.len -= before - mine.len();
        if mine.is_empty() {
            line.tickets.remove(caller);
            line.turn.retain(|c| c != caller);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(line: &mut Line) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(h) = line.head() {
            out.push(h);
            line.pop_head();
        }
        out
    }

    #[test]
    fn callers_take_turns_and_interactive_goes_first() {
        let mut line = Line::default();
        let (heavy, light, bot): (Arc<str>, Arc<str>, Arc<str>) =
            ("heavy".into(), "light".into(), "bot".into());
        let b0 = line.push(Class::Batch, &bot);
        let h: Vec<u64> = (0..4)
            .map(|_| line.push(Class::Interactive, &heavy))
            .collect();
        let l0 = line.push(Class::Interactive, &light);
        let l1 = line.push(Class::Interactive, &light);
        assert_eq!(line.len(), 7);
        assert_eq!(line.len_of(Class::Batch), 1);
        assert_eq!(drain(&mut line), vec![h[0], l0, h[1], l1, h[2], h[3], b0]);
        assert!(line.is_empty());
    }

    #[test]
    fn a_served_ticket_passes_its_callers_turn_on() {
        let mut line = Line::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let a0 = line.push(Class::Interactive, &a);
        let a1 = line.push(Class::Interactive, &a);
        let b0 = line.push(Class::Interactive, &b);
        line.served(Class::Interactive, &a, a0);
        assert_eq!(drain(&mut line), vec![b0, a1]);
    }

    #[test]
    fn a_removed_ticket_leaves_no_trace() {
        let mut line = Line::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let a0 = line.push(Class::Interactive, &a);
        let b0 = line.push(Class::Interactive, &b);
        line.remove(Class::Interactive, &a, a0);
        line.remove(Class::Interactive, &a, a0);
        assert_eq!(line.len(), 1);
        assert_eq!(drain(&mut line), vec![b0]);
    }
}
