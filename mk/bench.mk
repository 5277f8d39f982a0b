# Benchmarks: our code beside the peer on the same data in one run; they print ratios.
.PHONY: bench-repo
bench-repo: ## repository vs restic and borg on a pgbench dump (needs: apt-get install restic borgbackup time)
	bench/repo.sh
