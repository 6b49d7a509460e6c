// Collects a dispatch's errors and warnings. A kernel bug usually repeats in every threadgroup; each message
// is kept once, with the first threadgroup that showed it and how many others did.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

namespace msl_emulator {
namespace detail {

class Diagnostics {
 public:
  // `where` names the threadgroup (empty for a problem of the dispatch as a whole).
  void error(const std::string& message, const std::string& where = {}) { add(errors_, message, where); }
  void warning(const std::string& message, const std::string& where = {}) { add(warnings_, message, where); }
  bool has_errors() const { return !errors_.order.empty(); }

  std::vector<std::string> errors() const { return render(errors_); }
  std::vector<std::string> warnings() const { return render(warnings_); }

 private:
  struct Occurrences {
    std::string first_where;
    std::size_t count = 0;
  };
  struct Messages {
    std::vector<std::string> order;  // first appearance first
    std::map<std::string, Occurrences> seen;
  };

  static void add(Messages& messages, const std::string& message, const std::string& where) {
    Occurrences& occurrences = messages.seen[message];
    if (occurrences.count++ == 0) {
      occurrences.first_where = where;
      messages.order.push_back(message);
    }
  }

  static std::vector<std::string> render(const Messages& messages) {
    std::vector<std::string> lines;
    for (const std::string& message : messages.order) {
      const Occurrences& occurrences = messages.seen.at(message);
      std::string line = message;
      if (!occurrences.first_where.empty()) {
        line += " (" + occurrences.first_where;
        if (occurrences.count > 1) line += ", and " + std::to_string(occurrences.count - 1) + " more times";
        line += ")";
      }
      lines.push_back(line);
    }
    return lines;
  }

  Messages errors_;
  Messages warnings_;
};

}  // namespace detail
}  // namespace msl_emulator
