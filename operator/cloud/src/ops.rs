//! The cloud operations Berth calls and their request rates.
//!
//! AWS throttles each action per account and region with a token bucket
//! (a sustained refill rate and a burst size). [`Operation`] names every
//! action the seam exposes and knows AWS's published bucket for it, so the
//! simulator throttles like AWS and the [`pacer`](crate::pacer) stays below
//! it. [`TokenBucket`] is the shared, clock-explicit bucket both use.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// A token-bucket rate: `per_second` tokens refill every second, up to
/// `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rate {
    /// Sustained calls per second.
    pub per_second: f64,
    /// Calls that may be made at once from a full bucket.
    pub burst: f64,
}

impl Rate {
    /// A rate of `per_second` sustained with `burst`.
    pub const fn new(per_second: f64, burst: f64) -> Self {
        Rate { per_second, burst }
    }

    /// This rate with both numbers multiplied by `factor`.
    pub fn scaled(self, factor: f64) -> Self {
        Rate {
            per_second: self.per_second * factor,
            burst: (self.burst * factor).max(1.0),
        }
    }
}

/// Every cloud action of the seam, named as AWS names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Operation {
    /// ECS `RegisterTaskDefinition`.
    RegisterTaskDefinition,
    /// ECS `DescribeTaskDefinition`.
    DescribeTaskDefinition,
    /// ECS `DeregisterTaskDefinition`.
    DeregisterTaskDefinition,
    /// ECS `CreateService`.
    CreateService,
    /// ECS `UpdateService`.
    UpdateService,
    /// ECS `DeleteService`.
    DeleteService,
    /// ECS `DescribeServices`.
    DescribeServices,
    /// ECS `ListServices`.
    ListServices,
    /// ECS `ListTasks`.
    ListTasks,
    /// ECS `DescribeTasks`.
    DescribeTasks,
    /// EFS `CreateAccessPoint`.
    CreateAccessPoint,
    /// EFS `DescribeAccessPoints`.
    DescribeAccessPoints,
    /// EFS `DeleteAccessPoint`.
    DeleteAccessPoint,
    /// Secrets Manager `CreateSecret` / `PutSecretValue`.
    PutSecretValue,
    /// Secrets Manager `DeleteSecret`.
    DeleteSecret,
}

/// Groups of operations that share one client-side pacing bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Category {
    /// Create/Update/DeleteService: AWS 5/s, burst 50 each.
    ServiceMutation,
    /// Register/DeregisterTaskDefinition: AWS 1/s, burst 20.
    TaskDefinitionMutation,
    /// DescribeServices, ListServices, ListTasks, DescribeTasks: AWS 20/s,
    /// burst 100 each.
    Observation,
    /// DescribeTaskDefinition.
    TaskDefinitionRead,
    /// EFS access point calls.
    Efs,
    /// Secrets Manager calls.
    Secrets,
}

impl Category {
    /// All categories.
    pub const ALL: [Category; 6] = [
        Category::ServiceMutation,
        Category::TaskDefinitionMutation,
        Category::Observation,
        Category::TaskDefinitionRead,
        Category::Efs,
        Category::Secrets,
    ];

    /// AWS's published bucket for one action of this category.
    pub fn aws_rate(self) -> Rate {
        match self {
            Category::ServiceMutation => Rate::new(5.0, 50.0),
            Category::TaskDefinitionMutation => Rate::new(1.0, 20.0),
            Category::Observation => Rate::new(20.0, 100.0),
            Category::TaskDefinitionRead => Rate::new(20.0, 100.0),
            Category::Efs => Rate::new(10.0, 20.0),
            Category::Secrets => Rate::new(50.0, 50.0),
        }
    }
}

impl Operation {
    /// All operations.
    pub const ALL: [Operation; 15] = [
        Operation::RegisterTaskDefinition,
        Operation::DescribeTaskDefinition,
        Operation::DeregisterTaskDefinition,
        Operation::CreateService,
        Operation::UpdateService,
        Operation::DeleteService,
        Operation::DescribeServices,
        Operation::ListServices,
        Operation::ListTasks,
        Operation::DescribeTasks,
        Operation::CreateAccessPoint,
        Operation::DescribeAccessPoints,
        Operation::DeleteAccessPoint,
        Operation::PutSecretValue,
        Operation::DeleteSecret,
    ];

    /// The AWS action name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::RegisterTaskDefinition => "RegisterTaskDefinition",
            Operation::DescribeTaskDefinition => "DescribeTaskDefinition",
            Operation::DeregisterTaskDefinition => "DeregisterTaskDefinition",
            Operation::CreateService => "CreateService",
            Operation::UpdateService => "UpdateService",
            Operation::DeleteService => "DeleteService",
            Operation::DescribeServices => "DescribeServices",
            Operation::ListServices => "ListServices",
            Operation::ListTasks => "ListTasks",
            Operation::DescribeTasks => "DescribeTasks",
            Operation::CreateAccessPoint => "CreateAccessPoint",
            Operation::DescribeAccessPoints => "DescribeAccessPoints",
            Operation::DeleteAccessPoint => "DeleteAccessPoint",
            Operation::PutSecretValue => "PutSecretValue",
            Operation::DeleteSecret => "DeleteSecret",
        }
    }

    /// The pacing category the operation belongs to.
    pub fn category(self) -> Category {
        match self {
            Operation::RegisterTaskDefinition | Operation::DeregisterTaskDefinition => {
                Category::TaskDefinitionMutation
            }
            Operation::DescribeTaskDefinition => Category::TaskDefinitionRead,
            Operation::CreateService | Operation::UpdateService | Operation::DeleteService => {
                Category::ServiceMutation
            }
            Operation::DescribeServices
            | Operation::ListServices
            | Operation::ListTasks
            | Operation::DescribeTasks => Category::Observation,
            Operation::CreateAccessPoint
            | Operation::DescribeAccessPoints
            | Operation::DeleteAccessPoint => Category::Efs,
            Operation::PutSecretValue | Operation::DeleteSecret => Category::Secrets,
        }
    }

    /// AWS's published per-action bucket (each action has its own bucket
    /// at AWS; the pacer shares one per [`Category`]).
    pub fn aws_rate(self) -> Rate {
        self.category().aws_rate()
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token bucket driven by an explicit clock (`tokio::time::Instant`), so
/// it behaves deterministically under paused test time.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate.burst,
            last: now,
        }
    }

    /// The bucket's rate.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Changes the rate, keeping the current tokens (capped at the new burst).
    pub fn set_rate(&mut self, rate: Rate, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.tokens = self.tokens.min(rate.burst);
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate.per_second).min(self.rate.burst);
        self.last = self.last.max(now);
    }

    /// Tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens
    }

    /// Takes one token at `now`, or says how long until one is available.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        // Tolerate float residue so exactly-refilled tokens count.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else if self.rate.per_second <= 0.0 {
            Err(Duration::from_secs(3600))
        } else {
            let missing = 1.0 - self.tokens;
            Err(Duration::from_secs_f64(missing / self.rate.per_second)
                .max(Duration::from_micros(1)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(Rate::new(1.0, 20.0), start);
        for _ in 0..20 {
            assert!(bucket.try_take(start).is_ok());
        }
        let wait = bucket.try_take(start).expect_err("bucket is empty");
        assert_eq!(wait, Duration::from_secs(1));
        assert!(bucket.try_take(start + Duration::from_millis(999)).is_err());
        assert!(bucket.try_take(start + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn every_operation_has_a_category_and_an_aws_rate() {
        for op in Operation::ALL {
            assert!(op.aws_rate().per_second > 0.0, "{op}");
        }
        assert_eq!(
            Operation::RegisterTaskDefinition.aws_rate(),
            Rate::new(1.0, 20.0)
        );
        assert_eq!(
            Operation::DescribeServices.aws_rate(),
            Rate::new(20.0, 100.0)
        );
        assert_eq!(Operation::UpdateService.aws_rate(), Rate::new(5.0, 50.0));
    }
}
