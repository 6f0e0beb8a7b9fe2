//! `--conn-mode recorded`, sans-IO: the recorded client connection ("lane") each flow
//! rode on, and where a replayed connection opens and closes. Every pass over the
//! recording (a schedule sends each flow once per pass) opens each lane anew, as the
//! recorded clients opened their connections, and a lane's connection closes after
//! its last request of the pass.

use std::collections::HashMap;

/// The recorded connections of a recording and the flows each one carried.
#[derive(Debug, Clone)]
pub struct Lanes {
    lane_of: Vec<u32>,
    flows: Vec<Vec<usize>>,
}

impl Lanes {
    /// Lanes from each flow's recorded connection id, in file order. Id 0 (not
    /// recorded, as in a HAR without `connection`) is a lane of its own per flow.
    pub fn new(conns: &[u64]) -> Lanes {
        let mut index: HashMap<u64, u32> = HashMap::new();
        let mut flows: Vec<Vec<usize>> = Vec::new();
        let mut lane_of = Vec::with_capacity(conns.len());
        for (i, &c) in conns.iter().enumerate() {
            let next = flows.len() as u32;
            let lane = match c {
                0 => next,
                c => *index.entry(c).or_insert(next),
            };
            if lane == next {
                flows.push(Vec::new());
            }
            flows[lane as usize].push(i);
            lane_of.push(lane);
        }
        Lanes { lane_of, flows }
    }

    /// How many recorded connections there are.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// There are none (an empty recording).
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// The flows lane `lane` carried, in file order.
    pub fn flows(&self, lane: usize) -> &[usize] {
        &self.flows[lane]
    }
}

/// Where one released request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// Its recorded connection.
    pub lane: u32,
    /// Which opening of that connection (one per pass over the recording).
    pub opening: u64,
    /// It is the first request on that opening: a new connection.
    pub first: bool,
    /// It is the last: the connection closes after it.
    pub last: bool,
}

/// Places released requests on their lanes, counting each lane's requests so that
/// every pass opens the lane anew.
#[derive(Debug, Clone)]
pub struct LaneCursor {
    sent: Vec<u64>,
}

impl LaneCursor {
    /// A cursor over `lanes`, nothing released yet.
    pub fn new(lanes: &Lanes) -> Self {
        LaneCursor {
            sent: vec![0; lanes.len()],
        }
    }

    /// Places the next release of `flow`.
    pub fn place(&mut self, lanes: &Lanes, flow: usize) -> Place {
        let lane = lanes.lane_of[flow];
        let size = lanes.flows[lane as usize].len() as u64;
        let k = self.sent[lane as usize];
        self.sent[lane as usize] += 1;
        Place {
            lane,
            opening: k / size,
            first: k.is_multiple_of(size),
            last: k % size == size - 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_group_by_recorded_connection_and_unknown_ones_stand_alone() {
        let l = Lanes::new(&[7, 9, 7, 0, 9, 7, 0]);
        assert_eq!(l.len(), 4);
        assert_eq!(l.flows(0), [0, 2, 5]);
        assert_eq!(l.flows(1), [1, 4]);
        assert_eq!(l.flows(2), [3]);
        assert_eq!(l.flows(3), [6]);
    }

    #[test]
    fn each_pass_opens_and_closes_every_lane() {
        let l = Lanes::new(&[1, 2, 1, 2, 1, 2]);
        let mut c = LaneCursor::new(&l);
        let mut got = Vec::new();
        // two passes in file order, as --rate cycles the recording
        for f in (0..6).chain(0..6) {
            let p = c.place(&l, f);
            got.push((p.lane, p.opening, p.first, p.last));
        }
        assert_eq!(
            got,
            [
                (0, 0, true, false),
                (1, 0, true, false),
                (0, 0, false, false),
                (1, 0, false, false),
                (0, 0, false, true),
                (1, 0, false, true),
                (0, 1, true, false),
                (1, 1, true, false),
                (0, 1, false, false),
                (1, 1, false, false),
                (0, 1, false, true),
                (1, 1, false, true),
            ]
        );
        let l = Lanes::new(&[0]);
        let mut c = LaneCursor::new(&l);
        let p = c.place(&l, 0);
        assert!(p.first && p.last);
    }
}
