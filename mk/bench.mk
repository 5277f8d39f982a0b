# Benchmarks: our code beside the peer on the same data in one run; they print ratios.
.PHONY: bench-repo
bench-repo: ## repository vs restic 0.18.1 (built with go install) and borg (from Debian) on a pgbench dump
	bench/repo.sh

.PHONY: bench-backup
bench-backup: ## backup throughput on the test bed: 10k/50k objects, a database dump beside pg_dump, 20 PVCs
	$(MAKE) cluster-up
	$(CARGO) test --release --locked --test bench_backup -- --ignored --nocapture

.PHONY: bench-restore
bench-restore: ## restore throughput on the test bed: a 5,000-object project and a ~200 MB database
	$(MAKE) cluster-up
	$(CARGO) test --release --locked --test bench_restore -- --ignored --nocapture

.PHONY: bench-schedule
bench-schedule: ## 1,000 BackupSchedules on the same minute, limit 10: time to all completed, most Running at once, peak RSS
	$(MAKE) cluster-up
	$(CARGO) test --release --locked --test bench_schedule -- --ignored --nocapture

.PHONY: bench-peer
bench-peer: ## Rewind beside Velero 1.18.3 (built from the Go module proxy, run locally): 10,000 ConfigMaps+Secrets, objects/s, peak RSS, CPU s
	bench/peer.sh

.PHONY: bench-volumes
bench-volumes: ## volume file trees vs restic 0.18.1: ~2 GB of mixed files and 1,000,000 small files, day 2 after 1% changed; MB/s, files/s, stored bytes, peak RSS (no cluster)
	bench/volumes.sh
