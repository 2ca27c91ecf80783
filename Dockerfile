# syntax=docker/dockerfile:1
#
# alignd's container image. Three stages on the same pinned base:
#   build      npm ci + npm run build: the same npm scripts CI runs (.ci/run), so the image compiles
#              exactly what the tests compiled;
#   prod-deps  npm ci --omit=dev: production dependencies only, with native modules (better-sqlite3,
#              onnxruntime-node) built or fetched here, where the compilers are;
#   runtime    the compiled dist/ and the production node_modules, no compilers, no dev packages,
#              running as a non-root user.
#
# The base is pinned by its full version tag (Node 20.20.2, the Node that CI runs, on Debian 12
# "bookworm", slim variant). It is not pinned by digest: a digest names one registry push of one
# platform's manifest list, so it would tie the file to one build of the tag and go stale on every
# Debian security rebuild; the full tag fixes Node and the Debian release, and a dependency bot can
# bump it. Teams that need bit-for-bit reproducible images add "@sha256:..." at build time in their
# own pipeline. test/deploy/dockerfile.test.ts checks every FROM carries a full x.y.z version.
#
# GPU images: docker build --build-arg ONNXRUNTIME_NODE_INSTALL=cuda12 .
#   onnxruntime-node's install script then downloads the CUDA execution provider. The CPU provider
#   (default) and the WebGPU provider ship inside the npm package. See deploy/README.md, "GPU".
#
# The container's command and environment are declared once, below (ENV, ENTRYPOINT, CMD);
# test/deploy/container-start.test.ts reads them back from this file and runs exactly that.

# "skip" leaves onnxruntime-node with its bundled CPU and WebGPU providers; "cuda12" adds CUDA.
# Declared before the first FROM for its default; a stage sees it only where it re-declares it.
ARG ONNXRUNTIME_NODE_INSTALL=skip

FROM node:20.20.2-bookworm-slim AS build
# Toolchain for node-gyp: better-sqlite3 compiles from source when no prebuilt binary matches.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# No ARG ONNXRUNTIME_NODE_INSTALL here: compiling needs no CUDA provider. package.json's
# allowScripts denies onnxruntime-node's install script; .prebuild-installrc makes better-sqlite3
# build from source rather than try a download.
COPY package.json package-lock.json .prebuild-installrc ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY daemon ./daemon
COPY adapters ./adapters
RUN npm run build

FROM build AS prod-deps
# The install whose node_modules ship: the CUDA provider (if asked for) is fetched here, by running
# onnxruntime-node's install script on purpose (npm skips it: allowScripts denies it). RUN sees the
# ARG as an environment variable, which that script reads.
ARG ONNXRUNTIME_NODE_INSTALL
# A fresh install rather than `npm prune`: it is exactly what `npm ci --omit=dev` gives a user.
RUN rm -rf node_modules && npm ci --omit=dev --no-audit --no-fund \
 && if [ "$ONNXRUNTIME_NODE_INSTALL" != skip ]; then node node_modules/onnxruntime-node/script/install.js; fi \
 && npm cache clean --force

FROM node:20.20.2-bookworm-slim AS runtime
LABEL org.opencontainers.image.title="alignd" \
      org.opencontainers.image.description="Continuous-alignment daemon beside LLM inference servers" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist/daemon ./dist/daemon
COPY --from=build /app/dist/adapters ./dist/adapters
COPY package.json ./
COPY policies ./policies
# The job alignd ships to a Ray cluster (policy trainer: ray): copied to the shared storage per round.
COPY trainers/trl/requirements.txt ./trainers/trl/requirements.txt
COPY trainers/trl/alignd_trl ./trainers/trl/alignd_trl
# /policies starts with the example policies; Docker copies them into a fresh volume, and a
# Kubernetes ConfigMap or a bind mount replaces them.
COPY policies /policies
# uid/gid 1000 is the "node" user of the official image. Numeric, so Kubernetes' runAsNonRoot can
# verify it without resolving names. /data/registry exists in the image so that a volume mounted
# there on its own (compose shares just the registry with vLLM) starts owned by uid 1000: Docker
# copies the image directory's ownership into a fresh volume, and would otherwise make it root's.
RUN mkdir -p /data/registry && chown -R 1000:1000 /data
VOLUME ["/data", "/policies"]
# The working directory is the data volume: a relative path in a policy or config (a file_drop
# dir, say) lands in persistent, writable storage, never in the read-only /app.
WORKDIR /data

# Outside a container alignd binds 127.0.0.1 (daemon/config/process-config.ts). Inside one, the container's network
# namespace is the boundary: 0.0.0.0 is what lets a port mapping, a compose network or a Kubernetes
# Service reach it at all. Admin routes still need ALIGND_ADMIN_TOKEN, which is never set here.
ENV NODE_ENV=production \
    ALIGND_DATA_DIR=/data \
    ALIGND_HTTP_HOST=0.0.0.0 \
    ALIGND_HTTP_PORT=8787 \
    ALIGND_LOG_LEVEL=info
EXPOSE 8787
USER 1000:1000

# The slim image has no curl: Node's own fetch does the probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ALIGND_HTTP_PORT || 8787) + '/healthz').then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1))"]

# alignd handles SIGTERM itself (finish the batch in hand, commit, exit), so node can be PID 1.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/daemon/main.js"]
CMD ["start"]
