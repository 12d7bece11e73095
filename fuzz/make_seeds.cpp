// Makes the fuzz targets' seed corpora from realistic entries: reads a stream that p35-loadgen
// filled (scripts/fuzz.sh --make-seeds), writes one seed per entry, timestamp and value, and
// counts the entries into a small segment with ingest's own Counter for the inspector's seeds.
#include <hiredis/hiredis.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "counter.hpp"
#include "rules.hpp"
#include "segment_image.hpp"
#include "shm.hpp"

namespace {

namespace fs = std::filesystem;

struct RawEntry {
  p35::StreamId id;
  std::vector<std::string> fields;  // name, value, name, value, ...
};

std::vector<RawEntry> read_stream(const std::string& socket, const std::string& stream) {
  redisContext* c = redisConnectUnix(socket.c_str());
  if (c == nullptr || c->err) throw std::runtime_error("Failed to connect to " + socket);
  auto* reply =
      static_cast<redisReply*>(redisCommand(c, "XRANGE %b - +", stream.data(), stream.size()));
  if (reply == nullptr || reply->type != REDIS_REPLY_ARRAY)
    throw std::runtime_error("XRANGE failed");
  std::vector<RawEntry> entries;
  for (size_t i = 0; i < reply->elements; ++i) {
    const redisReply* e = reply->element[i];
    RawEntry r;
    r.id = p35::StreamId::parse(std::string(e->element[0]->str, e->element[0]->len)).value();
    for (size_t j = 0; j < e->element[1]->elements; ++j)
      r.fields.emplace_back(e->element[1]->element[j]->str, e->element[1]->element[j]->len);
    entries.push_back(std::move(r));
  }
  freeReplyObject(reply);
  redisFree(c);
  return entries;
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary)
      .write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// One FuzzedDataProvider string: backslashes doubled, ended by a backslash and a newline.
std::string fdp_string(std::string_view s) {
  std::string out;
  for (const char c : s) out += c == '\\' ? std::string("\\\\") : std::string(1, c);
  return out + "\\\n";
}

void write_normalize_seeds(const std::vector<RawEntry>& entries, const fs::path& dir) {
  for (const RawEntry& e : entries) {
    std::string seed = fdp_string(std::to_string(e.id.ms));
    for (const std::string& f : e.fields) seed += fdp_string(f);
    write_file(dir / ("entry-" + e.id.str()), seed);
  }
}

// Distinct values of the named fields, each prefixed for its target.
std::set<std::string> distinct_values(const std::vector<RawEntry>& entries,
                                      const std::set<std::string>& names) {
  std::set<std::string> values;
  for (const RawEntry& e : entries)
    for (size_t i = 0; i + 1 < e.fields.size(); i += 2)
      if (names.count(e.fields[i]) != 0) values.insert(e.fields[i + 1]);
  return values;
}

void write_timestamp_seeds(const std::vector<RawEntry>& entries, const fs::path& dir) {
  std::set<std::string> values = distinct_values(entries, {"timestamp"});
  // Shapes the generator may not draw: edges of the grammar and of the calendar.
  for (const char* extra : {"2024-02-29T23:59:59.999+14:00", "1969-12-31T23:59:59,5-0130",
                            "2026-01-01", "2026-01-01 00:00", "-1.0005", "+.5", "99999999999",
                            "100000000000", "999999999999999999", " 1767225600\t"})
    values.insert(extra);
  size_t n = 0;
  for (const std::string& v : values) write_file(dir / ("ts-" + std::to_string(n++)), v);
}

std::string limit_prefix(size_t limit) {
  return {static_cast<char>(limit & 0xff), static_cast<char>(limit >> 8)};
}

void write_clean_seeds(const std::vector<RawEntry>& entries, const fs::path& dir) {
  size_t n = 0;
  for (const std::string& v : distinct_values(entries, {"error", "reason"}))
    write_file(dir / ("reason-" + std::to_string(n++)), limit_prefix(p35::kReasonMaxBytes) + v);
  for (const std::string& v : distinct_values(entries, {"symbol", "decision", "executed"}))
    write_file(dir / ("short-" + std::to_string(n++)), limit_prefix(p35::kShortMaxBytes) + v);
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The two inspector seeds of one segment state: the file itself, and the same state as
// capacities plus the words that differ from a fresh creator image.
void write_inspect_seeds(const p35::Segment& seg, const fs::path& dir, const std::string& tag) {
  const std::string file = file_bytes(p35::shm_path(seg.name()));
  write_file(dir / ("raw-" + tag), std::string(1, '\0') + file);
  const std::vector<uint8_t> fresh = p35::fuzz::creator_image(seg.caps());
  std::string patched(1, '\1');
  patched.append(reinterpret_cast<const char*>(&seg.caps()), sizeof(p35::shm::Capacities));
  for (size_t at = 0; at + 8 <= file.size(); at += 8) {
    if (file.compare(at, 8, reinterpret_cast<const char*>(fresh.data() + at), 8) == 0) continue;
    const auto word = static_cast<uint32_t>(at / 8);
    patched.append(reinterpret_cast<const char*>(&word), sizeof word);
    patched.append(file, at, 8);
  }
  write_file(dir / ("patched-" + tag), patched);
}

p35::SegmentSpec seed_spec() {
  p35::SegmentSpec spec;
  spec.name = "p35fuzz-seeds-" + std::to_string(::getpid());
  spec.stream = "quantum:stream:apply.result";
  spec.group = "p35_decision_intel";
  spec.consumer = "seeds";
  spec.key_prefix = "quantum:p35:";
  spec.caps = {4, 2, 16, 16, 4, 64, 512, 32};  // within reduce_caps() of segment_image.hpp
  return spec;
}

// Rollup's side of a commit, as far as the inspector sees it: shadows and tags.
void simulate_commit(const p35::Segment& seg, p35::StreamId counted) {
  for (uint32_t i = 0; i < seg.slot_count(); ++i) {
    p35::shm::SlotHeader& live = seg.slot(i);
    std::memcpy(static_cast<void*>(&seg.shadow(0, i)), &live, seg.off().slot_bytes);
    seg.slot_meta()[i].committed_tag.store(live.gen.load() << 32 |
                                           (live.version.load() & 0xffffffffULL));
  }
  p35::publish_id(seg.rollup().committed, counted);
  seg.rollup().commit_count.store(1);
}

void count_into_segment(const std::vector<RawEntry>& entries, const fs::path& dir) {
  const p35::SegmentSpec spec = seed_spec();
  p35::Segment seg = p35::Segment::open_or_create(spec);
  p35::Counter counter(seg, true);
  counter.initialise_from_marker({});
  counter.recover();
  const int64_t now_minute = p35::minute_of_ms(static_cast<int64_t>(entries.back().id.ms));
  p35::Normalized n;
  size_t skipped = 0;
  for (const RawEntry& e : entries) {
    std::vector<p35::Field> fields;
    for (size_t i = 0; i + 1 < e.fields.size(); i += 2)
      fields.push_back({e.fields[i], e.fields[i + 1]});
    p35::normalize(fields, static_cast<int64_t>(e.id.ms), n);
    if (counter.add(e.id, &n, now_minute) == p35::Counter::Result::NeedSpace) ++skipped;
    if (counter.should_flush()) counter.flush();
  }
  counter.flush();
  seg.header().created_unix_ms = p35::fuzz::kImageCreatedMs;  // the same seeds on every run
  seg.header().creator_pid = 0;
  write_inspect_seeds(seg, dir, "counted");
  simulate_commit(seg, counter.counted_id());
  write_inspect_seeds(seg, dir, "committed");
  std::printf("inspect seeds: %zu entries counted, %zu did not fit the small ring\n",
              entries.size() - skipped, skipped);
  ::unlink(p35::shm_path(spec.name).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s REDIS_SOCKET STREAM CORPUS_DIR\n", argv[0]);
    return 2;
  }
  try {
    const std::vector<RawEntry> entries = read_stream(argv[1], argv[2]);
    if (entries.empty()) throw std::runtime_error("the stream is empty");
    const fs::path corpus = argv[3];
    for (const char* t : {"normalize", "timestamp", "clean", "inspect"})
      fs::create_directories(corpus / t);
    write_normalize_seeds(entries, corpus / "normalize");
    write_timestamp_seeds(entries, corpus / "timestamp");
    write_clean_seeds(entries, corpus / "clean");
    count_into_segment(entries, corpus / "inspect");
    std::printf("seeds from %zu entries written to %s\n", entries.size(), argv[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "Failed to make the seeds: %s\n", e.what());
    return 1;
  }
  return 0;
}
