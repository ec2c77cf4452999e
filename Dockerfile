# syntax=docker/dockerfile:1
# Multi-stage: build wheels (mysqlclient needs a compiler and headers), run on a slim non-root image.
FROM python:3.11-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential default-libmysqlclient-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY devstack ./devstack
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 etl
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER etl
WORKDIR /home/etl
# Parquet parts are spooled here; on Cloud Run this is memory-backed, so keep ETL_PART_ROWS modest.
ENV ETL_SPOOL_DIR=/tmp PYTHONUNBUFFERED=1
ENTRYPOINT ["etl-worker"]
CMD ["serve"]
