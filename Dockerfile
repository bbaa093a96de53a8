# The one medlabel image (docker-compose.yml, docs/deploy.md): the portal (`medlabel init` then
# `medlabel serve`, the default command), the schema migration (`medlabel init`), and the Dask
# scheduler and workers (`dask scheduler`, `dask worker tcp://scheduler:8786`), which must run the
# same code and library versions as the portal that submits the jobs. The health check is the
# portal's; docker-compose.yml gives the scheduler its own and turns it off for workers.
FROM python:3.11-slim-bookworm

# ORT_DISABLE_TELEMETRY: onnxruntime queues telemetry and a device id under $HOME and $TMPDIR otherwise.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    MEDLABEL_DATA_DIR=/data ORT_DISABLE_TELEMETRY=1
# OpenCV (pulled in by rapidocr for burned-in text detection) needs GL and GLib.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY medlabel ./medlabel
COPY db ./db
COPY services ./services
COPY portal ./portal
COPY api ./api
COPY deid ./deid
COPY agreement ./agreement
COPY inference ./inference
COPY active_learning ./active_learning
COPY migrations ./migrations
RUN pip install .

RUN useradd --create-home --uid 10001 medlabel && mkdir -p /data && chown medlabel /data
USER medlabel
VOLUME ["/data"]
EXPOSE 8501 8502
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health')"
CMD ["sh", "-c", "medlabel init && exec medlabel serve --port 8501 --address 0.0.0.0"]
