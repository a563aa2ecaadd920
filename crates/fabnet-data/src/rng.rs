//! Reproducible random streams: one ChaCha8 generator per (seed, epoch, purpose, index).
//!
//! Deriving a fresh generator for every sample (rather than sharing one) is what makes batches
//! independent of the number of worker threads and of the order in which samples finish.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for; distinct purposes never share a stream.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Domain {
    /// The identity shuffle of a seeded split.
    Split,
    /// The order in which an epoch visits identities.
    Order,
    /// The per-epoch jitter crop size c.
    Crop,
    /// A sample's video, track, frames and crop positions.
    Sample,
    /// The k-th redraw after unreadable frames in a sample.
    Retry(u32),
}

impl Domain {
    fn code(self) -> u64 {
        match self {
            Domain::Split => 1,
            Domain::Order => 2,
            Domain::Crop => 3,
            Domain::Sample => 4,
            Domain::Retry(k) => (5 << 32) | u64::from(k),
        }
    }
}

/// The generator for (seed, epoch, domain, index); the four words form the ChaCha key.
pub(crate) fn derive_rng(seed: u64, epoch: u64, domain: Domain, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key
        .chunks_exact_mut(8)
        .zip([seed, epoch, domain.code(), index])
    {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |seed, epoch, domain, index| {
            let mut rng = derive_rng(seed, epoch, domain, index);
            (0..4).map(|_| rng.random::<u64>()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1, 2, Domain::Sample, 3), draw(1, 2, Domain::Sample, 3));
        assert_ne!(draw(1, 2, Domain::Sample, 3), draw(1, 2, Domain::Sample, 4));
        assert_ne!(draw(1, 2, Domain::Sample, 3), draw(1, 3, Domain::Sample, 3));
        assert_ne!(draw(1, 2, Domain::Sample, 3), draw(2, 2, Domain::Sample, 3));
        assert_ne!(draw(1, 2, Domain::Sample, 3), draw(1, 2, Domain::Order, 3));
        assert_ne!(
            draw(1, 2, Domain::Retry(1), 3),
            draw(1, 2, Domain::Retry(2), 3)
        );
    }
}
