// tedious (Node) driven over stdin, same line protocol as pydriver.py:
//   exec <hex of the UTF-8 statement> | execp <hex statement> <hex param>,... | cancel | quit
// (execp: string parameters named @p1, @p2... in the statement)
// Prints "ready" once connected (or "connect-error <json>"), then one JSON line per exec.
// Statements go through Request + execSql, i.e. RPC sp_executesql (tedious's usual path).
// Used by tests/test_tds_drivers.py; tedious comes from $VDISIM_NODE_DRIVERS/node_modules.
"use strict";
const path = require("path");
const readline = require("readline");
const nodeDir = process.env.VDISIM_NODE_DRIVERS ||
  path.join(__dirname, "..", "..", "build", "tds-drivers");
const { Connection, Request, TYPES } = require(path.join(nodeDir, "node_modules", "tedious"));

const [host, port, optsJson] = process.argv.slice(2);
const opts = JSON.parse(optsJson || "{}");
const config = {
  server: host,
  authentication: { type: "default",
    options: { userName: opts.user || "sa", password: opts.password || "secret" } },
  options: { port: Number(port), database: opts.database || "master",
    encrypt: opts.encrypt === undefined ? false : opts.encrypt,
    trustServerCertificate: true, requestTimeout: 60000, connectTimeout: 15000,
    rowCollectionOnRequestCompletion: false, useColumnNames: false },
};

function jsonable(v, typeName) {
  if (v === null || v === undefined) return null;
  if (typeof v === "bigint" || (typeName === "IntN" && typeof v === "string")) {
    return { t: "decimal", v: String(v) };  // a bigint column arrives as a string
  }
  if (typeName === "BigInt" || typeName === "Numeric" || typeName === "Decimal" ||
      typeName === "NumericN" || typeName === "DecimalN") return { t: "decimal", v: String(v) };
  if (typeName === "UniqueIdentifier") return { t: "guid", v: String(v) };
  if (v instanceof Date) return { t: "datetime", v: v.toISOString() };
  if (Buffer.isBuffer(v)) return { t: "bytes", v: v.toString("hex") };
  return v;
}

let messages = [];
const conn = new Connection(config);
conn.on("infoMessage", (m) => messages.push([m.number, m.message]));
conn.on("errorMessage", () => {});
conn.on("error", (e) => { process.stderr.write(`connection error: ${e}\n`); });
conn.connect((err) => {
  if (err) {
    process.stdout.write("connect-error " + JSON.stringify({ error_text: String(err),
      error: err.number || null }) + "\n");
    process.exit(0);
  }
  process.stdout.write("ready\n");
  const rl = readline.createInterface({ input: process.stdin });
  rl.on("line", (line) => {
    const [cmd, arg, plist] = line.trim().split(" ");
    if (cmd === "exec") run(Buffer.from(arg || "", "hex").toString("utf8"), []);
    else if (cmd === "execp") {
      run(Buffer.from(arg, "hex").toString("utf8"),
        (plist || "").split(",").filter((v) => v).map((v) => Buffer.from(v, "hex").toString("utf8")));
    }
    else if (cmd === "cancel") conn.cancel();
    else if (cmd === "quit") { rl.close(); conn.close(); }
  });
});

function run(sql, params) {
  messages = [];
  const rowsets = [];
  let current = null;
  const req = new Request(sql, (err) => {
    // Several ERROR tokens arrive as an AggregateError whose .errors are the RequestErrors.
    const errs = err ? (err.errors && err.errors.length ? err.errors : [err]) : [];
    const out = { ok: !err, error: errs.length ? (errs[0].number || null) : null,
      error_text: errs.map((e) => `${e.code || ""}: ${e.message}`).join(" | "),
      messages, rowsets };
    process.stdout.write(JSON.stringify(out) + "\n");
  });
  req.on("columnMetadata", (cols) => {
    current = { columns: cols.map((c) => [c.colName, c.type.name]), rows: [] };
    rowsets.push(current);
  });
  req.on("row", (cols) => {
    current.rows.push(cols.map((c) => jsonable(c.value, c.metadata.type.name)));
  });
  params.forEach((v, i) => req.addParameter(`p${i + 1}`, TYPES.NVarChar, v));
  conn.execSql(req);
}
