# The two commands of the README: `make demo` and `make test`. Both do all set-up (libtorch into a cache outside
# the clone, see scripts/setup-libtorch.sh) and are safe to run again.
CARGO ?= cargo
DIFFUSE := target/release/diffuse
OUT ?= out

.PHONY: demo test test-long package setup build ci bench clean-out fuzz

demo: build
	$(DIFFUSE) doctor
	@echo
	$(DIFFUSE) solvers bench --problem examples/problem.json --json $(OUT)/solvers.json --plot $(OUT)/error_vs_nfe.svg --force
	@echo
	$(DIFFUSE) audio enhance examples/audio/noisy/speech.wav -o $(OUT)/audio/speech.wav --force
	$(DIFFUSE) audio eval --clean examples/audio/clean --noisy examples/audio/noisy --enhanced $(OUT)/audio
	$(DIFFUSE) audio enhance examples/audio/reverberant/speech.wav --model models/audio/sgmse-s-dereverb.safetensors -o $(OUT)/audio/dereverb/speech.wav --force
	$(DIFFUSE) audio eval --clean examples/audio/reverberant-clean --noisy examples/audio/reverberant --enhanced $(OUT)/audio/dereverb
	@echo
	$(DIFFUSE) pose estimate examples/pose/bunny-scene.ply --object examples/bunny.ply --viewpoint 0,0,0 -o $(OUT)/bunny-aligned.ply --force
	$(DIFFUSE) pose estimate examples/pose/mug-on-table.ply --category mug -o $(OUT)/mug-box.ply --force
	@echo
	@for pair in denoise:noisy deblur:blurred lowlight:dark; do \
		task=$${pair%%:*}; input=$${pair#*:}; \
		$(DIFFUSE) restore $$task examples/restore/$$input -o $(OUT)/restore/$$task --force -q && \
		printf '%-8s before: ' $$task && $(DIFFUSE) restore eval --clean examples/restore/clean --restored examples/restore/$$input | tail -1 && \
		printf '%-8s after:  ' $$task && $(DIFFUSE) restore eval --clean examples/restore/clean --restored $(OUT)/restore/$$task | tail -1 || exit 1; \
	done
	@# The same two photos when the blur kernel and the exposure curve are known (non-blind models).
	@for run in "deblur:blurred:--blur-sigma 2" "lowlight:dark:--exposure 0.1 --gamma 1.8"; do \
		task=$${run%%:*}; rest=$${run#*:}; input=$${rest%%:*}; flags=$${rest#*:}; \
		$(DIFFUSE) restore $$task examples/restore/$$input $$flags -o $(OUT)/restore/$$task-known --force -q && \
		printf '%-8s known:  ' $$task && $(DIFFUSE) restore eval --clean examples/restore/clean --restored $(OUT)/restore/$$task-known | tail -1 || exit 1; \
	done
	$(DIFFUSE) text sample --template "The [MASK:48] is" --num 2 -o $(OUT)/text.txt --force
	@cat $(OUT)/text.txt
	@echo
	@echo "Open $(OUT)/error_vs_nfe.svg (solver error vs NFE); listen to examples/audio/noisy/speech.wav and"
	@echo "$(OUT)/audio/speech.wav (and examples/audio/reverberant/speech.wav and $(OUT)/audio/dereverb/speech.wav); open $(OUT)/bunny-aligned.ply next to examples/pose/bunny-scene.ply (and $(OUT)/mug-box.ply next to examples/pose/mug-on-table.ply) in a point-cloud viewer;"
	@echo "compare $(OUT)/restore/*/motorcycle.png with examples/restore/{noisy,blurred,dark}/motorcycle.png"
	@echo "($(OUT)/restore/*-known/: the same photos restored with the blur kernel and the exposure curve known)."

# One libtorch thread per test: cargo runs tests in parallel, and OpenMP spin-waits badly when oversubscribed.
test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(CARGO) test --workspace

# Checks too slow for every CI run: #[ignore]d tests (none at present), then the full packaging verification.
test-long: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(CARGO) test --workspace -- --ignored
	$(MAKE) package

# Each library crate built from its own tarball, alone (CI runs the quick scripts/check-packages.sh instead).
package: setup
	$(CARGO) package --workspace --exclude diffuse-tests --allow-dirty

setup:
	@./scripts/setup-libtorch.sh

build: setup
	$(CARGO) build --release -p diffuse-cli

ci:
	./.ci/run

bench: setup
	$(CARGO) bench -p diffuse-core

# Longer fuzzing of every parser of user files (docs/reliability.md, "Fuzzing"); not part of `make test` or CI,
# which run the same fuzz_parsers property tests with their small fixed case counts. First the property tests with
# FUZZ_CASES cases each and a fresh FUZZ_SEED, then, when
# nightly and cargo-fuzz are installed, each cargo-fuzz target for FUZZ_SECONDS under libFuzzer's memory limits.
FUZZ_SECONDS ?= 60
FUZZ_CASES ?= 20000
FUZZ_TARGETS ?= wav ply problem_json target_json sidecar safetensors_header
fuzz: setup
	PROPTEST_CASES=$(FUZZ_CASES) FUZZ_SEED=$${FUZZ_SEED:-$$(date +%s)} OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} \
		$(CARGO) test -p diffuse-audio -p diffuse-pose -p diffuse-core -p diffuse-discrete --test fuzz_parsers \
		-- --nocapture
	@if $(CARGO) +nightly fuzz --version >/dev/null 2>&1; then \
		./fuzz/seeds.sh && for t in $(FUZZ_TARGETS); do \
			echo "== cargo fuzz: $$t for $(FUZZ_SECONDS) s"; \
			(cd fuzz && ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0 $(CARGO) +nightly fuzz run --fuzz-dir . \
				--target-dir target $$t corpus/$$t -- \
				-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
				-print_final_stats=1) || exit 1; \
		done; \
	else \
		echo "cargo +nightly fuzz is not installed: skipped the cargo-fuzz targets (rustup toolchain install nightly;" \
			"cargo +nightly install cargo-fuzz)"; \
	fi
