#!/usr/bin/env node
// A small otpd client, as a Node backend would write one: SendCode and VerifyCode with a deadline, the driver's
// address forwarded in x-forwarded-for, and a refusal's google.rpc details (ErrorInfo, RetryInfo, BadRequest,
// LocalizedMessage) decoded from the grpc-status-details-bin trailer. One JSON line per call on standard output.
//
//   node client.js send   <phone> [purpose]          e.g. node client.js send 010-1234-5678 LOGIN
//   node client.js verify <phone> <code> [purpose]
//
// OTPD_ADDRESS (default 127.0.0.1:50051), OTPD_CA (a PEM file: TLS, checking the server against it; default:
// plaintext), DRIVER_IP (the address to forward; default 203.0.113.7). docs/integration.md explains each part.
"use strict";

const fs = require("fs");
const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = require("protobufjs");

const PROTO_ROOT = path.join(__dirname, "..", "..", "proto");
const RPC_PROTOS = path.join(__dirname, "proto");

// The API, straight from the repository's proto/ (codegen would do the same from buf, docs/integration.md).
const definition = protoLoader.loadSync(path.join(PROTO_ROOT, "otp", "v1", "otp.proto"), {
  includeDirs: [PROTO_ROOT],
  keepCase: false,
  enums: String,
  longs: String,
  defaults: true,
});
const otp = grpc.loadPackageDefinition(definition).otp.v1;

// google.rpc.Status and the details otpd sends, for decoding refusals.
const rpc = new protobuf.Root();
rpc.resolvePath = (origin, target) => {
  const local = path.join(RPC_PROTOS, target);
  return fs.existsSync(local) ? local : protobuf.util.path.resolve(origin, target);
};
rpc.loadSync(["google/rpc/status.proto", "google/rpc/error_details.proto"], { keepCase: false });
const Status = rpc.lookupType("google.rpc.Status");
const DETAIL_TYPES = ["ErrorInfo", "RetryInfo", "BadRequest", "LocalizedMessage"];

/// The details of a refused call, by type name (errorInfo, retryInfo, …), with RetryInfo's delay in seconds.
function decodeDetails(error) {
  const raw = error.metadata && error.metadata.get("grpc-status-details-bin")[0];
  if (!raw) return {};
  const status = Status.decode(raw);
  const details = {};
  for (const any of status.details) {
    // type.googleapis.com/google.rpc.ErrorInfo (protobufjs names the field type_url or typeUrl by version)
    const name = String(any.typeUrl || any.type_url || "").split("/").pop();
    const short = name.replace(/^google\.rpc\./, "");
    if (!DETAIL_TYPES.includes(short)) continue; // a detail this client does not know: ignore it
    const message = rpc.lookupType(name).decode(any.value);
    const plain = rpc.lookupType(name).toObject(message, { longs: Number, defaults: true });
    const key = short[0].toLowerCase() + short.slice(1);
    if (short === "RetryInfo" && plain.retryDelay) {
      plain.retryDelaySeconds = Number(plain.retryDelay.seconds || 0) + (plain.retryDelay.nanos || 0) / 1e9;
    }
    details[key] = plain;
  }
  return details;
}

function client() {
  const address = process.env.OTPD_ADDRESS || "127.0.0.1:50051";
  const credentials = process.env.OTPD_CA
    ? grpc.credentials.createSsl(fs.readFileSync(process.env.OTPD_CA))
    : grpc.credentials.createInsecure();
  return new otp.OtpService(address, credentials);
}

function call(method, request) {
  const metadata = new grpc.Metadata();
  // The driver's address, for otpd's per-address limits: otpd believes it only from a peer listed in
  // --trusted-proxies (this backend).
  metadata.set("x-forwarded-for", process.env.DRIVER_IP || "203.0.113.7");
  // A deadline on every call: SendCode waits for the SMS provider (otpd refuses, DEADLINE_TOO_SHORT, a deadline
  // too short to send within).
  const deadline = new Date(Date.now() + 10_000);
  return new Promise((resolve) => {
    client()[method](request, metadata, { deadline }, (error, response) => {
      if (!error) {
        resolve({ call: method, ok: true, response });
        return;
      }
      const status = Object.keys(grpc.status).find((name) => grpc.status[name] === error.code);
      resolve({ call: method, ok: false, code: error.code, status, message: error.details, ...decodeDetails(error) });
    });
  });
}

async function main() {
  const [command, phone, ...rest] = process.argv.slice(2);
  let result;
  if (command === "send" && phone) {
    const purpose = `PURPOSE_${rest[0] || "LOGIN"}`;
    result = await call("sendCode", { phoneNumber: phone, purpose });
  } else if (command === "verify" && phone && rest[0]) {
    const purpose = `PURPOSE_${rest[1] || "LOGIN"}`;
    result = await call("verifyCode", { phoneNumber: phone, purpose, code: rest[0] });
  } else {
    process.stderr.write("usage: client.js send <phone> [purpose] | verify <phone> <code> [purpose]\n");
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(result) + "\n");
  // A refusal the caller should act on is an exit code too; expected check outcomes (WRONG_CODE) are not.
  process.exit(result.ok ? 0 : 1);
}

main();
