# Images for docker-compose.yml. Two targets:
#   beanstalkd  Debian's beanstalkd package, binlog in /var/lib/beanstalkd (mount a volume there)
#   app         postburner_py; the default target. Build your own image FROM it and add your
#               job code, or install your application next to postburner_py here.

FROM debian:bookworm-slim AS beanstalkd
RUN apt-get update \
 && apt-get install -y --no-install-recommends beanstalkd \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/beanstalkd \
 && chown beanstalkd:beanstalkd /var/lib/beanstalkd
USER beanstalkd
EXPOSE 11300
# -b: write-ahead log (binlog), so delayed jobs survive a restart (fsync every 50 ms by default).
CMD ["beanstalkd", "-l", "0.0.0.0", "-p", "11300", "-b", "/var/lib/beanstalkd"]

FROM python:3.11-slim AS app
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY postburner_py ./postburner_py
COPY migrations ./migrations
RUN pip install . \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin postburner \
 && chown postburner /app
USER postburner
CMD ["postburner", "status"]
