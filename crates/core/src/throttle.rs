//! Token buckets for per-shard throughput limits, with time passed in.
//!
//! Two ways to spend: [`TokenBucket::try_take`] refuses when the tokens are not there
//! (Kinesis answers `ProvisionedThroughputExceededException`), and
//! [`TokenBucket::take_with_delay`] always takes, going into debt, and says how long the
//! caller should wait before the debt is repaid (Kafka's way: delay the answer and report
//! `throttle_time_ms`, never fail the client).

/// A bucket holding at most `capacity` tokens, refilled at `rate_per_sec`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    capacity: u64,
    rate_per_sec: u64,
    /// Tokens available, scaled by 1000 so refills in whole milliseconds lose nothing.
    /// May be negative after [`TokenBucket::take_with_delay`].
    milli_tokens: i128,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket at `now_ms`. A rate of 0 means unlimited.
    pub fn new(capacity: u64, rate_per_sec: u64, now_ms: i64) -> TokenBucket {
        TokenBucket {
            capacity,
            rate_per_sec,
            milli_tokens: i128::from(capacity) * 1000,
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        if now_ms > self.last_ms {
            let elapsed = i128::from(now_ms - self.last_ms);
            let cap = i128::from(self.capacity) * 1000;
            self.milli_tokens =
                (self.milli_tokens + elapsed * i128::from(self.rate_per_sec)).min(cap);
            self.last_ms = now_ms;
        }
    }

    /// Takes `amount` tokens if available now; otherwise takes nothing and returns how
    /// many milliseconds until they would be.
    pub fn try_take(&mut self, now_ms: i64, amount: u64) -> Result<(), u64> {
        if self.rate_per_sec == 0 {
            return Ok(());
        }
        self.refill(now_ms);
        let wanted = i128::from(amount) * 1000;
        if self.milli_tokens >= wanted {
            self.milli_tokens -= wanted;
            Ok(())
        } else {
            Err(self.wait_ms(wanted - self.milli_tokens))
        }
    }

    /// Takes `amount` tokens, going into debt if needed, and returns how long the caller
    /// should hold its answer so that the long-run rate stays at `rate_per_sec`.
    pub fn take_with_delay(&mut self, now_ms: i64, amount: u64) -> u64 {
        if self.rate_per_sec == 0 {
            return 0;
        }
        self.refill(now_ms);
        self.milli_tokens -= i128::from(amount) * 1000;
        if self.milli_tokens >= 0 {
            0
        } else {
            self.wait_ms(-self.milli_tokens)
        }
    }

    /// Returns `amount` tokens taken for work that did not happen, up to the capacity.
    pub fn give_back(&mut self, amount: u64) {
        let cap = i128::from(self.capacity) * 1000;
        self.milli_tokens = (self.milli_tokens + i128::from(amount) * 1000).min(cap);
    }

    fn wait_ms(&self, missing_milli_tokens: i128) -> u64 {
        let rate = i128::from(self.rate_per_sec);
        let ms = (missing_milli_tokens + rate - 1) / rate;
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_serves_a_burst_then_refills_at_the_rate() {
        let mut bucket = TokenBucket::new(1000, 1000, 0);
        assert_eq!(bucket.try_take(0, 1000), Ok(()));
        assert_eq!(bucket.try_take(0, 1), Err(1));
        assert_eq!(bucket.try_take(500, 600), Err(100));
        assert_eq!(bucket.try_take(500, 500), Ok(()));
    }

    #[test]
    fn delayed_takes_accumulate_debt_at_the_configured_rate() {
        // 1 MiB/s with a 1 MiB burst: 5 MiB at once must be spread over ~4 s.
        let mib = 1024 * 1024;
        let mut bucket = TokenBucket::new(mib, mib, 0);
        let mut delay = 0;
        for _ in 0..5 {
            delay = bucket.take_with_delay(0, mib);
        }
        assert_eq!(delay, 4000);
        // After waiting it out, the bucket is even again.
        assert_eq!(bucket.take_with_delay(4000, 0), 0);
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let mut bucket = TokenBucket::new(0, 0, 0);
        assert_eq!(bucket.try_take(0, u64::MAX), Ok(()));
        assert_eq!(bucket.take_with_delay(0, u64::MAX), 0);
    }

    #[test]
    fn time_going_backwards_refills_nothing() {
        let mut bucket = TokenBucket::new(10, 10, 1000);
        assert_eq!(bucket.try_take(1000, 10), Ok(()));
        assert!(bucket.try_take(500, 1).is_err());
    }
}
