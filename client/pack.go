package client

import "bytes"

// A batch request's body is {"batch":[e1,e2,...]}: the envelope plus the events joined by commas,
// with no other byte. The server counts each element's raw bytes as sent, so the events' encoded
// bytes are exactly what it measures, and a body's size is known before it is built.
const (
	envelopeOpen  = `{"batch":[`
	envelopeClose = `]}`
)

// batchBodySize is the size of the body holding n events of sum bytes in all.
func batchBodySize(n, sum int) int {
	if n == 0 {
		return len(envelopeOpen) + len(envelopeClose)
	}
	return len(envelopeOpen) + sum + n - 1 + len(envelopeClose)
}

// pack splits events, in order, into batches whose bodies are at most maxBytes, with at most
// maxEvents events each (0: no limit). It fills each batch before starting the next; for batches
// that keep the events' order this greedy packing makes the fewest requests. Events are not
// reordered: the server stores them in the order received, and callers expect that order.
// Every event must be at most MaxEventBytes, and maxBytes at least batchBodySize(1, MaxEventBytes).
func pack(events []encoded, maxBytes, maxEvents int) [][]encoded {
	var out [][]encoded
	start, sum := 0, 0
	for i, e := range events {
		n := i - start
		if n > 0 && (batchBodySize(n+1, sum+len(e.raw)) > maxBytes || (maxEvents > 0 && n >= maxEvents)) {
			out = append(out, events[start:i:i])
			start, sum = i, 0
		}
		sum += len(e.raw)
	}
	if start < len(events) {
		out = append(out, events[start:])
	}
	return out
}

// batchBody builds the request body of a batch.
func batchBody(events []encoded) []byte {
	sum := 0
	for _, e := range events {
		sum += len(e.raw)
	}
	body := bytes.NewBuffer(make([]byte, 0, batchBodySize(len(events), sum)))
	body.WriteString(envelopeOpen)
	for i, e := range events {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(e.raw)
	}
	body.WriteString(envelopeClose)
	return body.Bytes()
}
