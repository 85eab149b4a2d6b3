#include "yaml_tree.hpp"

#include <exception>
#include <sstream>
#include <utility>

#include <yaml-cpp/anchor.h>
#include <yaml-cpp/depthguard.h>
#include <yaml-cpp/emitterstyle.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/exceptions.h>
#include <yaml-cpp/mark.h>
#include <yaml-cpp/parser.h>

namespace egressd::config::detail {
namespace {

SourcePos to_pos(std::string_view file, const YAML::Mark& mark) {
  SourcePos pos;
  pos.file = std::string(file);
  if (!mark.is_null() && mark.line >= 0 && mark.column >= 0) {
    pos.line = mark.line + 1;  // yaml-cpp counts from 0
    pos.col = mark.column + 1;
  }
  return pos;
}

// Builds the tree. A node is appended to its parent only once, and only the
// innermost open node's children grow, so pointers on the stack stay valid.
class TreeBuilder final : public YAML::EventHandler {
 public:
  TreeBuilder(std::string_view file, std::vector<Diagnostic>& diagnostics)
      : file_(file), diagnostics_(diagnostics) {}

  std::optional<YamlNode>& root() { return root_; }

  void OnDocumentStart(const YAML::Mark& /*mark*/) override {}
  void OnDocumentEnd() override {}

  void OnNull(const YAML::Mark& mark, YAML::anchor_t /*anchor*/) override {
    add(make(YamlNode::Kind::null, mark));
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    std::string name;
    if (anchor >= 1 && anchor <= anchor_names_.size()) name = anchor_names_[anchor - 1];
    refuse(mark, "YAML alias '*" + name + "' is refused: write the value out in full");
    add(make(YamlNode::Kind::alias, mark));
  }
  void OnScalar(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                const std::string& value) override {
    YamlNode node = make(YamlNode::Kind::scalar, mark);
    node.value = value;
    add(std::move(node));
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string& /*tag*/,
                       YAML::anchor_t /*anchor*/, YAML::EmitterStyle::value /*style*/) override {
    open(make(YamlNode::Kind::sequence, mark));
  }
  void OnSequenceEnd() override { close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string& /*tag*/, YAML::anchor_t /*anchor*/,
                  YAML::EmitterStyle::value /*style*/) override {
    open(make(YamlNode::Kind::mapping, mark));
  }
  void OnMapEnd() override { close(); }
  // Called just before the anchored node's own event, with the anchor's
  // position; every anchor is reported here, so the node events ignore it.
  void OnAnchor(const YAML::Mark& mark, const std::string& name) override {
    anchor_names_.push_back(name);
    refuse(mark, "YAML anchor '&" + name + "' is refused: write the value out in full");
  }

 private:
  static YamlNode make(YamlNode::Kind kind, const YAML::Mark& mark) {
    YamlNode node;
    node.kind = kind;
    if (!mark.is_null()) {
      node.line = mark.line + 1;
      node.col = mark.column + 1;
    }
    return node;
  }

  void refuse(const YAML::Mark& mark, std::string message) {
    diagnostics_.push_back(
        Diagnostic{Diagnostic::Severity::error, to_pos(file_, mark), std::move(message)});
  }

  YamlNode* add(YamlNode node) {
    if (stack_.empty()) {
      root_ = std::move(node);
      return &*root_;
    }
    YamlNode& parent = *stack_.back();
    // yaml-cpp positions an empty mapping value ("key:" then a newline) at
    // the next token, often lines later: point at its key instead.
    if (parent.kind == YamlNode::Kind::mapping && parent.children.size() % 2 == 1 &&
        node.kind == YamlNode::Kind::null) {
      const YamlNode& key = parent.children.back();
      if (node.line != key.line) {
        node.line = key.line;
        node.col = key.col;
      }
    }
    parent.children.push_back(std::move(node));
    return &parent.children.back();
  }
  void open(YamlNode node) { stack_.push_back(add(std::move(node))); }
  void close() {
    if (!stack_.empty()) stack_.pop_back();
  }

  std::string_view file_;
  std::vector<Diagnostic>& diagnostics_;
  std::optional<YamlNode> root_;
  std::vector<YamlNode*> stack_;
  std::vector<std::string> anchor_names_;
};

// Only notes where a further document starts.
class DocumentProbe final : public YAML::EventHandler {
 public:
  std::optional<YAML::Mark> start;
  void OnDocumentStart(const YAML::Mark& mark) override {
    if (!start) start = mark;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

}  // namespace

std::optional<YamlNode> parse_yaml(std::string_view text, std::string_view file,
                                   std::vector<Diagnostic>& diagnostics) {
  // yaml-cpp reads from a stream; the copy is bounded by kMaxConfigBytes,
  // which callers check first.
  std::istringstream in{std::string(text)};
  const std::size_t first_new = diagnostics.size();
  auto syntax_error = [&](SourcePos pos, std::string message) {
    // Anchor/alias reports from a tree that is being thrown away would only
    // be noise next to the error that stops everything.
    diagnostics.resize(first_new);
    diagnostics.push_back(Diagnostic{Diagnostic::Severity::error, std::move(pos),
                                     "YAML syntax error: " + std::move(message)});
  };
  try {
    YAML::Parser parser(in);
    TreeBuilder builder(file, diagnostics);
    if (!parser.HandleNextDocument(builder)) return std::nullopt;
    // A syntax error in a second document is reported as such (below);
    // a well-formed second document is refused here.
    DocumentProbe probe;
    if (parser.HandleNextDocument(probe)) {
      SourcePos pos = to_pos(file, probe.start.value_or(YAML::Mark::null_mark()));
      diagnostics.resize(first_new);
      diagnostics.push_back(Diagnostic{Diagnostic::Severity::error, std::move(pos),
                                       "more than one YAML document; expected exactly one"});
      return std::nullopt;
    }
    return std::move(builder.root());
  } catch (const YAML::DeepRecursion& e) {
    // yaml-cpp's own message for this is "bad file"; its limit keeps a
    // hostile document from exhausting the stack.
    syntax_error(to_pos(file, e.mark), "nested too deeply");
  } catch (const YAML::Exception& e) {
    syntax_error(to_pos(file, e.mark), e.msg);
  } catch (const std::exception& e) {
    syntax_error(to_pos(file, YAML::Mark::null_mark()), e.what());
  }
  return std::nullopt;
}

}  // namespace egressd::config::detail
