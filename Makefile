# Everyday entry points. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ENGINES := $(VENV)/bin/engines
STAMP := $(VENV)/.installed-stamp
CONFIG ?= models/models.yaml
COMPOSE ?= docker compose
ARGS ?=
# docker-compose.build.yml runs the container as you; bash does not export UID
export UID := $(shell id -u)
export GID := $(shell id -g)

# Builder image variants, one per TensorRT major (docs/container.md "Variants"): `make image TRT=10`,
# `make engines-docker TRT=10`. Each is tagged engines-builder:trt<N> and labelled with its TensorRT
# version; unset, engines-builder:latest with Dockerfile.build's own pins (TensorRT 11).
TRT_VARIANTS := 10 11
TRT_IMAGE_11 := nvcr.io/nvidia/tensorrt:26.08-py3
TRT_VERSION_11 := 11.2.1.2
TRT_IMAGE_10 := nvcr.io/nvidia/tensorrt:25.08-py3
TRT_VERSION_10 := 10.13.2.6
ifneq ($(TRT),)
ifeq ($(filter $(TRT),$(TRT_VARIANTS)),)
$(error TRT=$(TRT) is not a builder image variant. Next step: use TRT=11 (TensorRT $(TRT_VERSION_11)) or TRT=10 \
(TensorRT $(TRT_VERSION_10)); another release: TRT_IMAGE=<NGC tag> EXPECTED_TRT_VERSION=<its TensorRT>)
endif
export TRT_IMAGE := $(TRT_IMAGE_$(TRT))
export EXPECTED_TRT_VERSION := $(TRT_VERSION_$(TRT))
export ENGINES_IMAGE := engines-builder:trt$(TRT)
endif

.DEFAULT_GOAL := help
.PHONY: help install lock engines test test-fast lint bench image image-rtx image-info engines-docker verify-gpu deploy deploy-dry-run resolve clean \
	docker-up docker-down FORCE

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

# pip's progress bars are off (noise in CI logs), not its output: a line per package as it is
# collected and downloaded (with its size), so the long step is never silent.
PIP_INSTALL = $(PY) -m pip install --progress-bar off
# Versions come from requirements.lock (pip constraints: every package pinned; Dockerfile.build
# installs from the same file). `make lock` rewrites it from .venv.
LOCK := requirements.lock
EXTRAS := rtx,test,lint
$(STAMP): pyproject.toml $(LOCK)
	@echo ".venv: creating it and installing the pipeline with PyTorch, Ultralytics, ONNX and TensorRT for RTX:" \
	  "about 6.7 GB on disk (several GB to download); takes a few minutes on a fresh machine"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP_INSTALL) -q --upgrade pip
	@echo ".venv: step 1/2: the pipeline and its dependencies (the large step: PyTorch alone is about 4 GB)"
	$(PIP_INSTALL) -c $(LOCK) -e '.[$(EXTRAS)]'
	@echo ".venv: step 2/2: TensorRT API stubs for the API-compatibility test; Triton's schema and server for the Triton tests"
	# stubs of the full TensorRT API (10.13) for the API-compatibility test; --no-deps
	# because they depend on `tensorrt`, which PyPI cannot install here.
	$(PIP_INSTALL) -q --no-deps tensorrt-stubs==10.13.0.35.1
	# Triton's own checks for the Triton deploy target (tests/deploy/targets/tritonserver.py): its
	# model_config.proto (tritonclient) and the tritonserver binary nvidia-pytriton ships (together
	# about 145 MB). --no-deps: their protobuf, ml-dtypes and numpy pins would move the project's.
	$(PIP_INSTALL) -q --no-deps tritonclient==2.73.0 nvidia-pytriton==0.7.0
	touch $(STAMP)
	@echo ".venv: ready ($$(du -sh $(VENV) 2>/dev/null | cut -f1)). Run the CLI as $(VENV)/bin/engines, or \`source $(VENV)/bin/activate\` first"

install: $(STAMP) ## Create .venv and install the pipeline with its test tools

# Refresh the lock: UPGRADE="ultralytics onnx" first upgrades those in .venv, within the ranges
# of pyproject.toml (pip's only-if-needed: nothing else moves); then requirements.lock is rewritten
# from what .venv holds (.ci/lock.py). Commit it: the next `make install` and image build follow it.
lock: ## Rewrite requirements.lock from .venv (UPGRADE="pkg ..." upgrades those first)
	@test -x $(PY) || { echo "make lock: no $(VENV) yet: run make install first" >&2; exit 1; }
	$(if $(UPGRADE),$(PIP_INSTALL) --upgrade $(UPGRADE) -e '.[$(EXTRAS)]')
	$(PY) .ci/lock.py > $(LOCK).tmp && mv $(LOCK).tmp $(LOCK)
	@touch $(STAMP)
	@echo "make lock: $(LOCK) pins $$(grep -c '==' $(LOCK)) packages; commit it (git diff $(LOCK) shows what moved)"

engines: $(STAMP) ## Export, build, verify and publish the engine set (demo weights if no checkpoints)
	$(ENGINES) --config $(CONFIG) run $(ARGS)
	@echo "make: the \`engines\` CLI is $(ENGINES) (not on PATH): run it as $(ENGINES) --help, or \`source $(VENV)/bin/activate\` and then \`engines --help\`"

# make test starts what the suite needs and stops what it started (.ci/with-test-services.sh):
# this checkout's private Docker Engine (reused if `make docker-up` already runs it) and
# Debian's docker-registry. Without root or apt the suite still runs; those tests skip, saying why.
test: $(STAMP) ## Lint, then the whole test suite (starts and stops a private Docker Engine as root)
	$(VENV)/bin/ruff check pipeline tests benchmarks
	@bash .ci/with-test-services.sh $(VENV) $(PY) -m pytest -q -rs $(ARGS)

test-fast: $(STAMP) ## Tests without the slow exports/builds
	$(PY) -m pytest -q -rs -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff over the package and tests
	$(VENV)/bin/ruff check pipeline tests benchmarks

docker-up: $(STAMP) ## Start this checkout's private Docker Engine for the tests (prints the DOCKER_HOST to export)
	@bash .ci/start-dockerd.sh $(VENV) | grep DOCKER_HOST=

docker-down: ## Stop this checkout's private Docker Engine (only that one)
	@bash .ci/stop-dockerd.sh

bench: $(STAMP) ## Benchmarks: export, build, cached rerun, resolve start-up (prints tables)
	$(PY) -m benchmarks

# docker compose reads .env beside the compose file: UID/GID make a plain
# `docker compose -f docker-compose.build.yml run --rm builder` run as you. Other lines are kept.
.env: FORCE
	@{ grep -sv -E '^(UID|GID)=' .env; echo "UID=$$(id -u)"; echo "GID=$$(id -g)"; } > .env.tmp && mv .env.tmp .env

# When the builder image is missing, `docker compose run` builds it without a word first (7.1 GB):
# say so before. The name is the one compose uses (ENGINES_IMAGE from the environment or .env).
IMAGE_SIZE_NOTE = about 7.1 GB, a few minutes
BUILDER_IMAGE_CHECK = image=$$($(COMPOSE) -f docker-compose.build.yml config --images builder 2>/dev/null); \
	image=$${image:-engines-builder:latest}; \
	if ! docker image inspect "$$image" >/dev/null 2>&1; then \
	echo "make: the builder image $$image is not here: building it now ($(IMAGE_SIZE_NOTE))" >&2; \
	elif [ "$(1)" = build ]; then echo "make: rebuilding the builder image $$image (layers that did not change come from the cache)" >&2; fi

# The image build, with two things compose does not do on failure: a registry it cannot reach
# (no NGC access: "no such host", "unauthorized") gets a next step, and the intermediate
# container a failed classic-builder step leaves (untagged image, exited) is removed: only
# those created by this build. $(1): extra -f files (the RTX image).
IMAGE_BUILD = log=$$(mktemp); before=$$(docker ps -aq --no-trunc 2>/dev/null | sort); \
	{ $(COMPOSE) -f docker-compose.build.yml $(1) build builder 2>&1; echo $$? > "$$log.code"; } | tee "$$log"; \
	code=$$(cat "$$log.code" 2>/dev/null || echo 1); \
	if [ "$$code" -ne 0 ]; then \
	  for id in $$(comm -13 <(echo "$$before") <(docker ps -aq --no-trunc --filter status=exited --filter status=created 2>/dev/null | sort)); do \
	    img=$$(docker inspect -f '{{.Config.Image}}' "$$id" 2>/dev/null); \
	    case "$$img" in sha256:*|[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]*) \
	      [ -z "$$(docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' "$$id" 2>/dev/null)" ] \
	        && docker rm -f "$$id" >/dev/null 2>&1 && echo "make: removed the container $${id:0:12} the failed build left" >&2;; \
	    esac; \
	  done; \
	  if grep -qiE 'no such host|dial tcp|unauthorized|authentication required|denied|TLS handshake|i/o timeout|connection refused|manifest unknown|not found: manifest' "$$log"; then \
	    echo "make: the image build could not fetch its base image from the registry (message above)." \
	      "Next step: without NGC access (or offline), build the TensorRT for RTX image instead:" \
	      "\`make image-rtx\` (a plain Python base from Docker Hub, or PYTHON_IMAGE=<your mirror>), then" \
	      "\`docker compose -f docker-compose.build.yml -f docker-compose.rtx.yml run --rm builder\`;" \
	      "for the NGC image, \`docker login nvcr.io\` (user \$$oauthtoken, an NGC API key) or set" \
	      "TRT_IMAGE to a mirror you can reach (docs/container.md)." >&2; \
	  fi; \
	fi; rm -f "$$log" "$$log.code"; exit $$code

image: .env ## Build the NGC TensorRT builder image (needs Docker)
	@$(call BUILDER_IMAGE_CHECK,build)
	@$(call IMAGE_BUILD,)

image-rtx: .env ## Build the TensorRT for RTX builder image: no NGC, no GPU needed (Dockerfile.rtx)
	@$(call IMAGE_BUILD,-f docker-compose.rtx.yml)

image-info: $(STAMP) ## TensorRT version of the builder image (read from its label)
	$(ENGINES) docker image-info

# `docker compose run builder ...` as the targets below run it:
# - when Docker cannot hand the container a GPU, compose only relays the daemon's terse
#   "could not select device driver": add what to do about it;
# - on Ctrl-C, or SIGINT/SIGTERM to make's pid alone (a CI runner cancelling the job), remove
#   the builder by its name. A signal to `docker compose`'s own pid never reaches the container:
#   the docker CLI exits at once and the builder runs on (measured, docs/container.md "Ctrl-C").
#   Compose runs in the background and the shell waits with `wait`, which a trapped signal
#   interrupts (a foreground pipeline would hold the trap back until the build ended).
BUILDER_RUN = $(call BUILDER_IMAGE_CHECK,run); log=$$(mktemp); name=engines-builder-$$$$; \
	trap 'docker rm -f "$$name" >/dev/null 2>&1; echo "make: interrupted: builder $$name removed" >&2; \
	rm -f "$$log" "$$log.code"; exit 130' INT TERM; \
	exec 3<&0; { $(COMPOSE) -f docker-compose.build.yml run --rm --name "$$name" builder $(1) <&3 2>&1; \
	echo $$? > "$$log.code"; } | tee "$$log" & wait $$!; \
	code=$$(cat "$$log.code" 2>/dev/null || echo 1); \
	if [ "$$code" -ne 0 ] && grep -q 'could not select device driver' "$$log"; then \
	echo "make: Docker could not give the builder a GPU (no NVIDIA Container Toolkit registered with this Docker)." \
	"Next step: install it and register it (docs/container.md); on a host" \
	"without an NVIDIA GPU, \`make engines\` builds TensorRT for RTX sets instead." >&2; fi; \
	rm -f "$$log" "$$log.code"; exit $$code

engines-docker: .env ## Build engines for this host's GPU inside the builder container
	@$(call BUILDER_RUN,$(ARGS))

verify-gpu: .env ## GPU acceptance in the container: build with TensorRT, verify the engines on this GPU, print the report
	@$(call BUILDER_RUN,run --backend tensorrt)
	@$(call BUILDER_RUN,verify --benchmark --batch 1)

# resolve picks the set here (pending engine-level verification is accepted with a warning);
# the engines-check service then verifies it on the GPU and runs `resolve --require`, and
# pyt-api-prod starts only if that passes.
# The mounts come from the chosen set's manifest (docker-compose.engines.yml, the second -f).
# When the gate fails, `up` stops; the engines-check log says why, so it is printed.
PROD := $(COMPOSE) -f docker-compose.prod.full.yml -f docker-compose.engines.yml --env-file .env.engines
deploy: $(STAMP) ## Resolve the engine set for this host, then start pyt-api-prod behind engines-check
	$(ENGINES) --config $(CONFIG) resolve --write-env .env.engines --write-mounts docker-compose.engines.yml $(ARGS)
	@$(PROD) up -d || { code=$$?; echo "make deploy: the engines-check gate or the start failed; its log:" >&2; \
	  $(PROD) logs --no-color engines-check >&2; exit $$code; }

# A DRY RUN of `make deploy` for a machine without a GPU: nothing starts, nothing is handed over.
# resolve judges the sets against a GPU-facts file instead of this host (default: the shipped
# example of an RTX 4090 on an R580 driver, which the TensorRT for RTX demo set of `make engines`
# fits), writes the env file and the mounts into DRY_RUN_DIR (not the real .env.engines), and
# `docker compose ... config` shows the services `make deploy` would start, when compose is here.
DRY_RUN_FACTS ?= tests/data/gpu-facts/rtx4090-r580.csv
DRY_RUN_DIR ?= /tmp/engines-deploy-dry-run-$(UID)
DRY_RUN_PROD = $(COMPOSE) -f docker-compose.prod.full.yml -f $(DRY_RUN_DIR)/docker-compose.engines.yml \
	--env-file $(DRY_RUN_DIR)/.env.engines
deploy-dry-run: $(STAMP) ## DRY RUN of make deploy without a GPU (example GPU facts; starts nothing)
	@echo "make deploy-dry-run: DRY RUN, nothing is started: resolve against $(DRY_RUN_FACTS)" \
	  "(an example, not this host), files into $(DRY_RUN_DIR)/"
	@mkdir -p $(DRY_RUN_DIR)
	$(ENGINES) --config $(CONFIG) resolve --gpu-facts $(DRY_RUN_FACTS) --allow-demo --no-link \
	  --write-env $(DRY_RUN_DIR)/.env.engines --write-mounts $(DRY_RUN_DIR)/docker-compose.engines.yml $(ARGS)
	@if $(COMPOSE) version >/dev/null 2>&1; then \
	  echo "make deploy-dry-run: DRY RUN: the services make deploy would start (docker compose config; nothing starts):"; \
	  PYT_API_IMAGE=$${PYT_API_IMAGE:-pyt-api:dry-run} $(DRY_RUN_PROD) config; \
	else echo "make deploy-dry-run: no \`$(COMPOSE)\` here: the compose step is left out"; fi
	@echo "make deploy-dry-run: DRY RUN done: nothing was started; models/engines/current is unchanged." \
	  "On the GPU host: make deploy"

resolve: $(STAMP) ## Show which engine set this host would get (no hand-over)
	$(ENGINES) --config $(CONFIG) resolve --no-link $(ARGS)

clean: ## Remove ONNX and engine sets built from demo weights (never checkpoints or real sets)
	$(PY) -m pipeline --config $(CONFIG) clean --yes
