--pg: -- Arm instances that registered themselves (ARM_REGISTRY_URL), shared by every orchestrator
--pg: -- replica whichever one took the registration; a registration lapses at expires_at (Unix ms)
--pg: -- unless the instance renews it.
--sqlite: -- Arm instances that registered themselves (ARM_REGISTRY_URL); a registration lapses at
--sqlite: -- expires_at (Unix ms) unless the instance renews it.
CREATE TABLE arm_instances (
    arm           TEXT NOT NULL,
    url           TEXT NOT NULL,
    registered_at {int} NOT NULL,
    expires_at    {int} NOT NULL,
    PRIMARY KEY (arm, url)
);
