# coord: build, test, bench, lint, cross-build. `make test` is what CI runs.
GO ?= go
FUZZTIME ?= 20s
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.7.0

.PHONY: build test suite vet cross lint bench fuzz clean demo soak integration-cluster test-windows

build:
	$(GO) build -o bin/ ./cmd/...

# gofmt, vet (also for Windows and macOS), staticcheck, the cross-builds,
# the whole suite with the race detector, then the contract suite on a
# local TLS etcd cluster, then the Windows tests under Wine.
#
# BUSY=N runs N CPU-burning loops beside the whole target, as a loaded CI
# host or fleet machine would (`make test BUSY=2`); they are killed when it
# ends, whatever the outcome.
BUSY ?= 0
test:
	@if [ "$(BUSY)" -gt 0 ]; then \
	  pids=; for i in $$(seq $(BUSY)); do (while :; do :; done) & pids="$$pids $$!"; done; \
	  trap 'kill $$pids 2>/dev/null' EXIT; trap 'exit 130' INT TERM; \
	  echo "$(BUSY) busy loops beside the suite:$$pids"; \
	  $(MAKE) BUSY=0 test; \
	else $(MAKE) suite; fi

# The cluster suite and the Windows lane run even when the plain one
# failed: one flaky test must not hide what they would have found.
suite: lint cross
	@rc=0; $(GO) test -race -count=1 -timeout 20m ./... || rc=$$?; \
	$(MAKE) integration-cluster || rc=$$?; \
	$(MAKE) test-windows || rc=$$?; \
	exit $$rc

# The Windows test binaries of filelock, coord (file backend) and
# integration (coord.exe processes: windows_test.go), run under Wine in a
# throwaway prefix; installs wine64 and mingw-w64 when missing (as root).
# See internal/wintest/run.sh; README lists what Wine skips and why.
test-windows:
	GO=$(GO) ./internal/wintest/run.sh

# The contract suite (integration/) on a 3-member etcd cluster with mutual
# TLS and etcd auth, brought up by deploy/local-cluster.sh, as its coord
# user, who may use the cluster's prefix only; with only that backend
# (COORD_TEST_BACKENDS). TestLocalClusterMemberKilled SIGKILLs the leader
# while coord processes use it, early in the run: the rest of the suite
# meets a cluster with one member down. Tests that do not depend on the
# backend ran in the plain suite and are skipped (CLUSTER_SKIP), and so is
# TestHerd: a herd of 150 TLS clients against a cluster with a member down
# on a busy 2-core host loses its leader (measure it by hand: BENCHMARKS.md). The
# cluster is torn down whatever the outcome; the status shown before that
# includes the dead member.
CLUSTER_DIR ?= /tmp/coord-cluster-test
# Below Linux's ephemeral ports (32768-), which outgoing connections take.
CLUSTER_PORT ?= 31379
CLUSTER_SKIP ?= ^Test(Herd|EtcdUnreachable|CLICounterCoordServer|ServerBinaryMissing|Cluster(LeaderKilled|ConnectedMemberKilled|LeaseLeaderChange)|FS.*|PauseHolderFile)$$
integration-cluster:
	@export COORD_CLUSTER_DIR=$(CLUSTER_DIR) COORD_CLUSTER_PORT=$(CLUSTER_PORT); \
	./deploy/local-cluster.sh down >/dev/null; out=$$(./deploy/local-cluster.sh up) || exit 1; \
	again="COORD_CLUSTER_DIR=$(CLUSTER_DIR) COORD_CLUSTER_PORT=$(CLUSTER_PORT) ./deploy/local-cluster.sh down"; \
	case "$$out" in *"$$again"*) ;; *) echo "local-cluster.sh up: its follow-up commands lack this cluster's settings:"; echo "$$out"; ./deploy/local-cluster.sh down; exit 1;; esac; \
	trap 'exit 130' INT TERM; trap './deploy/local-cluster.sh down' EXIT; \
	echo "cluster up in $(CLUSTER_DIR)"; \
	COORD_TEST_CLUSTER_ENV=$(CLUSTER_DIR)/coord.env COORD_TEST_BACKENDS=etcd-cluster COORD_TEST_CLUSTER_KILL=1 \
		$(GO) test -race -count=1 -timeout 20m -skip '$(CLUSTER_SKIP)' ./integration; rc=$$?; \
	./deploy/local-cluster.sh status || echo "(status exit $$?: a member is down)"; \
	exit $$rc

vet:
	$(GO) vet ./...
	GOOS=windows $(GO) vet ./...
	GOOS=darwin $(GO) vet ./...
	GOOS=freebsd $(GO) vet ./...

cross:
	GOOS=windows GOARCH=amd64 $(GO) build ./cmd/...
	GOOS=darwin GOARCH=arm64 $(GO) build ./cmd/...
	GOOS=freebsd GOARCH=amd64 $(GO) build ./cmd/...

lint: vet
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(STATICCHECK) ./...

# Benchmarks beside their anchors (installing the anchors when missing);
# writes BENCHMARKS.md. BENCH_COUNT=N runs each timing benchmark N times
# (default 3); about 9 minutes on a 2-core machine (builds included; a
# local 3-member etcd cluster is brought up for the idle-sessions row).
bench:
	./bench/report.sh

# A randomized fault run (kills, pauses, partitions) of SOAK per backend,
# replayed for violations; prints a summary table. CI runs a short round.
SOAK ?= 1m
soak:
	COORD_SOAK=$(SOAK) $(GO) test -count=1 -run '^TestSoak$$' -v -timeout 30m ./integration

# Each fuzz target for FUZZTIME; their seed corpora (testdata/fuzz) also run
# in every plain `go test`.
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzFileName$$' -fuzztime $(FUZZTIME) ./filelock
	$(GO) test -run '^$$' -fuzz '^FuzzNameFromFile$$' -fuzztime $(FUZZTIME) ./filelock
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeHeader$$' -fuzztime $(FUZZTIME) ./filelock
	$(GO) test -run '^$$' -fuzz '^FuzzHeaderRoundTrip$$' -fuzztime $(FUZZTIME) ./filelock
	$(GO) test -run '^$$' -fuzz '^FuzzParseRecord$$' -fuzztime $(FUZZTIME) ./coord
	$(GO) test -run '^$$' -fuzz '^FuzzEscapeName$$' -fuzztime $(FUZZTIME) ./etcdlock

clean:
	rm -rf bin

# The main job on the file backend: four processes ask for one toolchain at
# once; exactly one runs the download, the others wait and use it.
DEMO ?= /tmp/coord-demo
demo: build
	rm -rf $(DEMO) && mkdir -p $(DEMO)
	for i in 1 2 3 4; do \
	  COORD_LOCK_DIR=$(DEMO)/locks ./bin/coord download demo-sdk-1.0 $(DEMO)/toolchains/demo-sdk-1.0 -- \
	    sh -c 'echo "coord pid $$COORD_PID downloads into $$COORD_DEST (token $$COORD_FENCING_TOKEN)"; cp bin/coord "$$COORD_DEST/"; sleep 2; echo "$$COORD_PID" > "$$COORD_DEST/downloaded-by"' & \
	done; wait
	@echo "--- $(DEMO)/toolchains:"; ls -A $(DEMO)/toolchains $(DEMO)/toolchains/demo-sdk-1.0
	@echo "--- downloaded by coord pid $$(cat $(DEMO)/toolchains/demo-sdk-1.0/downloaded-by) (one process of four; the others waited for it)"
