package com.textlabeler.examples;

import com.textlabeler.labeler.v1.ClassifyRequest;
import com.textlabeler.labeler.v1.ClassifyResponse;
import com.textlabeler.labeler.v1.LabelFailure;
import com.textlabeler.labeler.v1.LabelInfo;
import com.textlabeler.labeler.v1.LabelScore;
import com.textlabeler.labeler.v1.LabelerGrpc;
import com.textlabeler.labeler.v1.ListLabelsRequest;
import com.textlabeler.labeler.v1.ListLabelsResponse;
import com.textlabeler.trainer.v1.Job;
import com.textlabeler.trainer.v1.ListRequest;
import com.textlabeler.trainer.v1.ListResponse;
import com.textlabeler.trainer.v1.StatusRequest;
import com.textlabeler.trainer.v1.StatusResponse;
import com.textlabeler.trainer.v1.TrainerGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.StatusRuntimeException;
import io.grpc.TlsChannelCredentials;
import io.grpc.internal.JsonParser;
import io.grpc.stub.MetadataUtils;
import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * Calls the text-labeler services from Java: the Labeler's ListLabels and Classify, and (with
 * --trainer) the Trainer's List and Status.
 *
 * <pre>
 * labeler-client --labeler localhost:50051 --trainer localhost:50052 霸王别姬 是一部 非常 值得 看的 电影
 * </pre>
 *
 * <p>Exit status: 0 on success, 2 on a usage error, 3 when an RPC fails; a failed RPC prints
 * "error: CODE_NAME: message" on stderr.
 */
public final class LabelerClient {
  private static final int EXIT_USAGE = 2;
  private static final int EXIT_RPC_ERROR = 3;

  private String labelerTarget = "localhost:50051";
  private String trainerTarget = "";
  private long timeoutMs = 10_000;
  private String caFile = "";
  private final List<String> words = new ArrayList<>();

  public static void main(String[] args) {
    LabelerClient client = new LabelerClient();
    try {
      client.parse(args);
    } catch (IllegalArgumentException e) {
      System.err.println("usage: labeler-client [--labeler HOST:PORT] [--trainer HOST:PORT]"
          + " [--timeout-ms N] [--ca CA.pem] WORD...\n" + e.getMessage());
      System.exit(EXIT_USAGE);
    }
    System.exit(client.run());
  }

  private void parse(String[] args) {
    for (int i = 0; i < args.length; i++) {
      String arg = args[i];
      boolean hasValue = i + 1 < args.length;
      switch (arg) {
        case "--labeler":
        case "--trainer":
        case "--timeout-ms":
        case "--ca":
          if (!hasValue) {
            throw new IllegalArgumentException(arg + " needs a value");
          }
          String value = args[++i];
          if (arg.equals("--labeler")) {
            labelerTarget = value;
          } else if (arg.equals("--trainer")) {
            trainerTarget = value;
          } else if (arg.equals("--ca")) {
            caFile = value;
          } else {
            timeoutMs = Long.parseLong(value);
          }
          break;
        default:
          // Words go to the server as given, even none: the server validates them.
          words.add(arg);
      }
    }
  }

  private int run() {
    ManagedChannel labelerChannel = null;
    ManagedChannel trainerChannel = null;
    try {
      labelerChannel = open(labelerTarget);
      callLabeler(labelerChannel);
      if (!trainerTarget.isEmpty()) {
        trainerChannel = open(trainerTarget);
        callTrainer(trainerChannel);
      }
      return 0;
    } catch (StatusRuntimeException e) {
      io.grpc.Status status = e.getStatus();
      // Status.Code's names are the canonical ones: INVALID_ARGUMENT, NOT_FOUND, ...
      System.err.println("error: " + status.getCode().name() + ": " + status.getDescription());
      return EXIT_RPC_ERROR;
    } catch (IOException e) {
      System.err.println("error: reading the CA file: " + e.getMessage());
      return EXIT_USAGE;
    } finally {
      close(labelerChannel);
      close(trainerChannel);
    }
  }

  private void callLabeler(ManagedChannel channel) {
    LabelerGrpc.LabelerBlockingStub labeler = LabelerGrpc.newBlockingStub(channel).withInterceptors(auth());
    ListLabelsResponse labels = labeler.withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS)
        .listLabels(ListLabelsRequest.getDefaultInstance());
    for (LabelInfo l : labels.getLabelsList()) {
      System.out.printf(Locale.ROOT, "label %s model=%s version=%d state=%s%n", l.getLabel(), l.getModel(),
          l.getModelVersion(), l.getState().name().replaceFirst("^LABEL_STATE_", ""));
    }
    ClassifyResponse result = labeler.withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS)
        .classify(ClassifyRequest.newBuilder().addAllWords(words).build());
    for (LabelScore s : result.getLabelsList()) {
      System.out.printf(Locale.ROOT, "classify %s %.4f model=%s version=%d%n", s.getLabel(), s.getProbability(),
          s.getModel(), s.getModelVersion());
    }
    for (LabelFailure f : result.getFailuresList()) {
      System.out.printf(Locale.ROOT, "failure %s %s: %s%n", f.getLabel(), f.getCodeName(), f.getMessage());
    }
  }

  private void callTrainer(ManagedChannel channel) {
    TrainerGrpc.TrainerBlockingStub trainer = TrainerGrpc.newBlockingStub(channel).withInterceptors(auth());
    ListResponse jobs = trainer.withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS)
        .list(ListRequest.newBuilder().setLimit(5).build());
    System.out.printf(Locale.ROOT, "jobs %d%n", jobs.getJobsCount());
    for (Job j : jobs.getJobsList()) {
      System.out.printf(Locale.ROOT, "job %s model=%s state=%s%n", j.getJobId(), j.getModel(), jobState(j));
    }
    if (jobs.getJobsCount() == 0) {
      return;
    }
    StatusResponse st = trainer.withDeadlineAfter(timeoutMs, TimeUnit.MILLISECONDS)
        .status(StatusRequest.newBuilder().setJobId(jobs.getJobs(0).getJobId()).setLogLines(5).build());
    Job job = st.getJob();
    System.out.printf(Locale.ROOT, "status %s state=%s epoch=%d/%d log_lines=%d reason=\"%s\"%n", job.getJobId(),
        jobState(job), job.getProgress().getEpoch(), job.getProgress().getEpochs(), st.getLogTailCount(),
        job.getReason());
  }

  /**
   * docs/clients.md's retry policy: gRPC retries a refused call after the server's
   * grpc-retry-pushback-ms, and retryThrottling stops retries while most calls fail.
   */
  // service-config:start
  private static final String SERVICE_CONFIG = """
      {
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
      }
      """;
  // service-config:end

  @SuppressWarnings("unchecked")
  private ManagedChannel open(String target) throws IOException {
    ChannelCredentials credentials = caFile.isEmpty()
        ? InsecureChannelCredentials.create()
        : TlsChannelCredentials.newBuilder().trustManager(new File(caFile)).build();
    // grpc-java's own JSON parser (grpc-core): no JSON library on the class path.
    Map<String, ?> serviceConfig = (Map<String, ?>) JsonParser.parse(SERVICE_CONFIG);
    return Grpc.newChannelBuilder(target, credentials)
        .defaultServiceConfig(serviceConfig)
        .enableRetry()
        .build();
  }

  /** Adds "authorization: Bearer $TEXT_LABELER_TOKEN" to every call when the variable is set. */
  private static io.grpc.ClientInterceptor auth() {
    Metadata headers = new Metadata();
    String token = System.getenv("TEXT_LABELER_TOKEN");
    if (token != null && !token.isEmpty()) {
      headers.put(Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER), "Bearer " + token);
    }
    return MetadataUtils.newAttachHeadersInterceptor(headers);
  }

  private static String jobState(Job job) {
    return job.getState().name().replaceFirst("^JOB_STATE_", "");
  }

  private static void close(ManagedChannel channel) {
    if (channel == null) {
      return;
    }
    channel.shutdownNow();
    try {
      channel.awaitTermination(5, TimeUnit.SECONDS);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
