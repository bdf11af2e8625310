// Command labeler-client calls the text-labeler services from Go: the
// Labeler's ListLabels and Classify, and (with -trainer) the Trainer's List
// and Status.
//
//	labeler-client -labeler localhost:50051 -trainer localhost:50052 霸王别姬 是一部 非常 值得 看的 电影
//
// Exit status: 0 on success, 2 on a usage or connection set-up error, 3 when
// an RPC fails; a failed RPC prints "error: CODE_NAME: message" on stderr.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	labelerv1 "textlabeler/gen/go/labeler/v1"
	trainerv1 "textlabeler/gen/go/trainer/v1"
)

const exitRPCError = 3

func main() {
	labelerAddr := flag.String("labeler", "localhost:50051", "the Labeler's host:port")
	trainerAddr := flag.String("trainer", "", "the Trainer's host:port; empty skips the Trainer calls")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of each call")
	caFile := flag.String("ca", "", "PEM CA certificate: use TLS and trust this CA (default: plaintext)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: %s [flags] WORD...\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()

	labelerConn := dial(*labelerAddr, *caFile)
	defer labelerConn.Close()
	labeler := labelerv1.NewLabelerClient(labelerConn)

	ctx := func() (context.Context, context.CancelFunc) { return callContext(*timeout) }

	c, cancel := ctx()
	labels, err := labeler.ListLabels(c, &labelerv1.ListLabelsRequest{})
	cancel()
	check(err)
	for _, l := range labels.GetLabels() {
		fmt.Printf("label %s model=%s version=%d state=%s\n",
			l.GetLabel(), l.GetModel(), l.GetModelVersion(), strings.TrimPrefix(l.GetState().String(), "LABEL_STATE_"))
	}

	// The words go to the server as given, even none: the server validates them.
	c, cancel = ctx()
	result, err := labeler.Classify(c, &labelerv1.ClassifyRequest{Words: flag.Args()})
	cancel()
	check(err)
	for _, s := range result.GetLabels() {
		fmt.Printf("classify %s %.4f model=%s version=%d\n", s.GetLabel(), s.GetProbability(), s.GetModel(), s.GetModelVersion())
	}
	for _, f := range result.GetFailures() {
		fmt.Printf("failure %s %s: %s\n", f.GetLabel(), f.GetCodeName(), f.GetMessage())
	}

	if *trainerAddr == "" {
		return
	}
	trainerConn := dial(*trainerAddr, *caFile)
	defer trainerConn.Close()
	trainer := trainerv1.NewTrainerClient(trainerConn)

	c, cancel = ctx()
	jobs, err := trainer.List(c, &trainerv1.ListRequest{Limit: 5})
	cancel()
	check(err)
	fmt.Printf("jobs %d\n", len(jobs.GetJobs()))
	for _, j := range jobs.GetJobs() {
		fmt.Printf("job %s model=%s state=%s\n", j.GetJobId(), j.GetModel(), jobState(j.GetState()))
	}
	if len(jobs.GetJobs()) == 0 {
		return
	}
	newest := jobs.GetJobs()[0]
	c, cancel = ctx()
	st, err := trainer.Status(c, &trainerv1.StatusRequest{JobId: newest.GetJobId(), LogLines: 5})
	cancel()
	check(err)
	job := st.GetJob()
	fmt.Printf("status %s state=%s epoch=%d/%d log_lines=%d reason=%q\n", job.GetJobId(), jobState(job.GetState()),
		job.GetProgress().GetEpoch(), job.GetProgress().GetEpochs(), len(st.GetLogTail()), job.GetReason())
}

// serviceConfig is docs/clients.md's retry policy: gRPC retries a refused call
// after the server's grpc-retry-pushback-ms, and retryThrottling stops retries
// while most calls fail, so an overloaded Labeler is not hammered.
//
// service-config:start
const serviceConfig = `{
  "methodConfig": [
    {
      "name": [
        {
          "service": "labeler.v1.Labeler"
        }
      ],
      "retryPolicy": {
        "maxAttempts": 4,
        "initialBackoff": "0.05s",
        "maxBackoff": "1s",
        "backoffMultiplier": 2,
        "retryableStatusCodes": [
          "RESOURCE_EXHAUSTED",
          "UNAVAILABLE"
        ]
      }
    }
  ],
  "retryThrottling": {
    "maxTokens": 100,
    "tokenRatio": 0.2
  }
}`

// service-config:end

// dial opens a channel; grpc-go dials lazily, so errors surface on the first call.
func dial(addr, caFile string) *grpc.ClientConn {
	opt := grpc.WithInsecure()
	if caFile != "" {
		creds, err := credentials.NewClientTLSFromFile(caFile, "")
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: reading the CA file: %v\n", err)
			os.Exit(2)
		}
		opt = grpc.WithTransportCredentials(creds)
	}
	conn, err := grpc.Dial(addr, opt, grpc.WithDefaultServiceConfig(serviceConfig))
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: dialing %s: %v\n", addr, err)
		os.Exit(2)
	}
	return conn
}

// callContext carries the deadline and, when TEXT_LABELER_TOKEN is set, the bearer token.
func callContext(timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	if token := os.Getenv("TEXT_LABELER_TOKEN"); token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return ctx, cancel
}

// check prints a failed call's status as "error: CODE_NAME: message" and exits 3.
func check(err error) {
	if err == nil {
		return
	}
	s := status.Convert(err)
	fmt.Fprintf(os.Stderr, "error: %s: %s\n", codeName(s.Code()), s.Message())
	os.Exit(exitRPCError)
}

// codeName is the canonical name of a status code, e.g. codes.InvalidArgument
// -> "INVALID_ARGUMENT", the spelling every gRPC language and grpcurl share.
func codeName(c codes.Code) string {
	var b strings.Builder
	name := c.String()
	for i, r := range name {
		if i > 0 && unicode.IsUpper(r) && unicode.IsLower(rune(name[i-1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToUpper(r))
	}
	return b.String()
}

func jobState(s trainerv1.JobState) string {
	return strings.TrimPrefix(s.String(), "JOB_STATE_")
}
