#!/usr/bin/env bash
# Machine set-up that pip cannot do: mysqlclient's build headers, the gcloud Pub/Sub emulator,
# headless Chromium for the dashboard's browser tests (tests/ops), and the local PostgreSQL / MariaDB
# servers (started if they are down). Idempotent; quiet when all is there.
set -euo pipefail

need_apt=()
dpkg -s default-libmysqlclient-dev >/dev/null 2>&1 || need_apt+=(default-libmysqlclient-dev)
dpkg -s pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
dpkg -s chromium >/dev/null 2>&1 || need_apt+=(chromium)  # etl-worker dashboard's browser tests
command -v gcloud >/dev/null 2>&1 || need_apt+=(google-cloud-cli google-cloud-cli-pubsub-emulator)
if command -v gcloud >/dev/null 2>&1 && ! dpkg -s google-cloud-cli-pubsub-emulator >/dev/null 2>&1 \
    && [ ! -d "$(dirname "$(readlink -f "$(command -v gcloud)")")/../platform/pubsub-emulator" ]; then
  need_apt+=(google-cloud-cli-pubsub-emulator)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing system packages: ${need_apt[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get install -y "${need_apt[@]}" >/dev/null || {
    $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y "${need_apt[@]}" >/dev/null; }
fi
