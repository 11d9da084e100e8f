# quakecat: earthquake-catalog ETL on Flyte 2. Everything runs through uv, in .venv.

set shell := ["bash", "-euo", "pipefail", "-c"]

# List the recipes
default:
    @just --list --unsorted

# Bytecode is compiled here: with PYTHONDONTWRITEBYTECODE set (many containers and CI images),
# every run would compile Flyte and the rest of its imports from source again, 1.3 s of start-up.

# Create or update .venv exactly as uv.lock pins it, bytecode compiled
setup:
    uv sync --locked --quiet --compile-bytecode

# Run the ETL against the real service (e.g. just etl --start 2024-05-01 --end 2024-05-08)
etl *ARGS: setup
    uv run --locked quakecat etl {{ARGS}}

# Offline demo: a generated fake FDSN service on 127.0.0.1, the ETL against it, data/demo.duckdb
demo *ARGS: setup
    uv run --locked quakecat demo {{ARGS}}

# Deploy the pipeline and its daily trigger to the cluster in .flyte/config.yaml (QUAKECAT_ARCHIVE=s3://... names the archive its runs add to)
deploy *ARGS: setup
    uv run --locked flyte deploy {{ARGS}} pipelines/etl.py driver

# Run the ETL on the cluster and follow it (e.g. just etl-remote 2024-05-01 2024-05-08)
etl-remote START END *ARGS: setup
    uv run --locked flyte run --follow {{ARGS}} pipelines/etl.py etl --start {{START}} --end {{END}}

# Download a cluster run's database to data/remote.duckdb (default: the latest successful etl run)
download *ARGS: setup
    uv run --locked quakecat download {{ARGS}}

# Measure speed, request economy and memory against the fake service (just bench --quick)
bench *ARGS: setup
    uv run --locked quakecat bench {{ARGS}}

# Run the test suite (e.g. just test -k clean, or just test -m "not slow")
test *ARGS: setup
    uv run --locked pytest {{ARGS}}

# Lint and check formatting
lint: setup
    uv run --locked ruff check .
    uv run --locked ruff format --check .

# Format the code and apply safe lint fixes
fmt: setup
    uv run --locked ruff format .
    uv run --locked ruff check --fix .
