// Reference peer: Medplum's Hl7Server (npm @medplum/hl7) answering AA, storing nothing.
// Used by the load comparison (see docs/performance.md). Prints `PORT <n>` once listening on
// 127.0.0.1 (port 0 = any free port) and serves until killed.
const { Hl7Server } = require('@medplum/hl7');

const server = new Hl7Server((connection) => {
  connection.addEventListener('message', ({ message }) => {
    connection.send(message.buildAck());
  });
});
server.start(Number(process.argv[2] || 0));
server.server.on('listening', () => {
  console.log(`PORT ${server.server.address().port}`);
});
