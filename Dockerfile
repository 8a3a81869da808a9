# The same environment tools/setup.sh builds on a Debian 12 machine, on Node 20.
FROM node:20-bookworm
WORKDIR /opt/rebound
COPY . .
RUN tools/setup.sh
EXPOSE 10809 10810
VOLUME /opt/rebound/rebound-data
ENTRYPOINT ["bin/rebound"]
# The API answers to localhost and the container's own names; reached by another name (the host's
# address through -p), add it: serve ... --http-host-name HOST (docs/config.md, httpHostNames).
CMD ["serve", "--demo", "--nbd", "0.0.0.0:10809", "--http", "0.0.0.0:10810"]
