# celerity-check: none (the helper library, required by the Ruby plugins)
# frozen_string_literal: true
#
# Write a Celerity plugin in Ruby with one block per task and one call to run.
#
#     #!/usr/bin/env ruby
#     require_relative 'celerity_plugin'
#     include CelerityPlugin
#
#     task 'plugins.rb_add', params: { x: 'integer', y: 'integer' }, queue: 'plugins' do |x, y|
#       x + y
#     end
#
#     run
#
# Standard library only (json); Ruby 3.1 or newer. run speaks Celerity plugin protocol 1
# (docs/plugins.md) in the mode the worker asks for through CELERITY_MODE:
#
# * "oneshot" or unset: read one JSON request from stdin until EOF, write one answer
#   ({"result": ...} or {"error": {"type", "message", "retryable", "traceback"}}) to stdout,
#   exit 0. A task that raises RetryableError (or any error whose `retryable` is true) also
#   makes the process exit 75 (EX_TEMPFAIL): the worker's cue that a retry may help.
# * "persistent": newline-delimited JSON-RPC 2.0 on stdin/stdout: initialize, task/run,
#   $/cancel (best effort), describe, shutdown, exit. EOF on stdin means exit once the calls
#   already received are answered.
# * "describe": write the plugin's description (its tasks, the policy each suggests, their
#   argument schemas) as one JSON document to stdout and exit 0. Discovery (`plugin_dirs` in
#   tasks.yaml) asks every plugin this way.
#
# Registering tasks:
#   task 'a.b' do |x, y| ... end           the block serves task a.b; its parameters name the
#                                          task's parameters (any value; |x, y = 1| makes y
#                                          optional); *rest takes extra positional arguments,
#                                          keyword parameters (scale: 1) and **opts take
#                                          keyword arguments by name
#   task 'a.b', 'c.d' do ... end           ...and c.d
#   task 'a.b', params: { x: 'integer', y: { type: 'integer', default: 1 } } do |x, y| ... end
#                                          an argument schema: name -> a type name (string,
#                                          integer, number, boolean, array, object, null) or
#                                          a JSON Schema (docs/plugins.md has the subset); a
#                                          parameter with a default is optional. The worker
#                                          and clients check calls against it before they run.
#   task 'a.b', queue: 'plugins', time_limit: 30, mode: 'persistent', doc: 'Adds.' do ... end
#                                          the policy the plugin suggests (tasks.yaml wins key
#                                          by key; POLICY_KEYS lists them), plus doc, returns,
#                                          varargs, varkwargs
# Keyword arguments of a call go to the block's parameter of that name, positional or
# keyword ({"args": [2], "kwargs": {"y": 3}} calls the block with 2, 3). With one task
# registered it serves every task name; otherwise the request's "task" picks the block.
#
# In persistent mode run(max_inflight: N) runs up to N calls at once, each in a thread. A
# cancelled call is answered at once with the "cancelled" error; the block is interrupted
# (CelerityPlugin::Cancelled is raised in it) and may check CelerityPlugin.cancelled?.
# CelerityPlugin.current_request is the whole request (id, attempt, deadline, meta).
#
# stdout belongs to the protocol: once run is called, puts/print and anything written to
# file descriptor 1 (child processes too) go to stderr, which the worker logs.
# Big integers arrive and leave exact (Ruby's Integer has no size limit).

require 'json'

module CelerityPlugin
  PROTOCOL = 1
  EX_TEMPFAIL = 75
  EX_USAGE = 64

  # JSON-RPC error codes used by the protocol.
  PARSE_ERROR = -32_700
  INVALID_REQUEST = -32_600
  METHOD_NOT_FOUND = -32_601
  INVALID_PARAMS = -32_602
  TASK_FAILED = -32_000
  CANCELLED = -32_800

  # The policy keys a plugin may suggest (tasks.yaml's task keys, except how the plugin is
  # run: builtin, plugin, env, set_env, cwd are the operator's call).
  POLICY_KEYS = %w[queue mode time_limit soft_time_limit ignore_result track_started retries
                   retry_backoff retry_backoff_max rate_limit burst max_concurrency unique
                   grace_period max_output_bytes processes max_inflight max_calls max_rss_mb
                   handshake_timeout].freeze
  SCHEMA_KEYS = %w[doc params varargs varkwargs returns].freeze
  TYPE_NAMES = %w[string integer number boolean array object null].freeze

  # Raise this (or a subclass) from a task to ask the worker to retry it.
  class RetryableError < StandardError
    def retryable
      true
    end
  end

  # Raised inside a running task when the worker cancels the call (persistent mode). An
  # Exception, not a StandardError, so that a bare `rescue` in task code does not swallow it.
  class Cancelled < Exception # rubocop:disable Lint/InheritException
  end

  # A request the helper cannot dispatch; `code` is the JSON-RPC error code.
  class BadRequest < StandardError
    attr_reader :code, :type

    def initialize(code, type, message)
      super(message)
      @code = code
      @type = type
    end
  end

  # One registered block: how a call's args and kwargs bind to it, and what it suggests.
  class Entry
    attr_reader :method, :positional, :keywords, :keyrest, :options, :schema

    def initialize(block, options)
      holder = Object.new
      holder.define_singleton_method(:celerity_task, &block) # method semantics: strict arity
      @method = holder.method(:celerity_task)
      @options = options
      params = @method.parameters
      @positional = params.select { |k, _| %i[req opt].include?(k) }.map { |_, n| n.to_s }
      @keywords = params.select { |k, _| %i[key keyreq].include?(k) }.map { |_, n| n.to_s }
      @rest = params.any? { |k, _| k == :rest }
      @keyrest = params.any? { |k, _| k == :keyrest }
      @schema = options.key?('params') ? explicit_schema(options) : derived_schema(params)
      # With an explicit schema, keyword arguments bind to its names in order.
      @positional = @schema['params'].keys - @keywords if options.key?('params') && @schema['params']
    end

    def derived_schema(params)
      schema = { 'params' => {} }
      params.each do |kind, name|
        case kind
        when :req, :keyreq then schema['params'][name.to_s] = {}
        when :opt, :key then schema['params'][name.to_s] = { 'default' => nil, 'description' => 'optional' }
        when :rest then schema['varargs'] = true
        when :keyrest then schema['varkwargs'] = true
        end
      end
      if @rest && !@keywords.empty?
        # The schema's binding puts extra positional arguments into the parameters in order
        # before varargs; keyword parameters never take them. Leave those out (as extra
        # keyword arguments) rather than refuse calls the block would take.
        @keywords.each { |k| schema['params'].delete(k) }
        schema['varkwargs'] = true
      end
      schema
    end

    def explicit_schema(options)
      params = options['params']
      return {} if params.nil?

      schema = {}
      schema['params'] = params
      %w[varargs varkwargs].each { |k| schema[k] = options[k] if options.key?(k) && options[k] }
      schema
    end

    # The block's arguments for a call: [positional, keywords]; raises TypeError like Python.
    def bind(args, kwargs)
      list = args.dup
      keywords = {}
      name = 'task'
      kwargs.each do |key, value|
        i = @positional.index(key)
        if i
          raise TypeError, "#{name}() got multiple values for argument '#{key}'" if i < args.length

          list[i] = value
        elsif @keywords.include?(key) || @keyrest
          keywords[key.to_sym] = value
        else
          raise TypeError, "#{name}() got an unexpected keyword argument '#{key}'"
        end
      end
      [list, keywords]
    end

    def call(args, kwargs)
      list, keywords = bind(args, kwargs)
      keywords.empty? ? @method.call(*list) : @method.call(*list, **keywords)
    end

    def description
      out = {}
      out['doc'] = options['doc'] if options['doc'].is_a?(String)
      @schema.each { |k, v| out[k] = v }
      %w[varargs varkwargs].each { |k| out[k] = options[k] if options.key?(k) && options[k] }
      out['returns'] = CelerityPlugin.schema_of(options['returns'], 'returns') if options['returns']
      POLICY_KEYS.each { |k| out[k] = options[k] if options.key?(k) }
      out
    end
  end

  @registry = {} # task name -> Entry
  @entries = []
  @local_key = :celerity_call

  class << self
    attr_reader :registry, :entries
  end

  module_function

  # Register a block as the handler of one or more task names, with the options it suggests.
  def task(*names, **options, &block)
    raise ArgumentError, "task(#{names.map(&:inspect).join(', ')}): give the task's code as a block" unless block

    names = names.flatten
    raise ArgumentError, 'task: name at least one task' if names.empty?

    names.each do |n|
      raise TypeError, "task names must be non-empty strings, got #{n.inspect}" unless n.is_a?(String) && !n.empty?
    end
    opts = CelerityPlugin.normalize_options(options)
    entry = Entry.new(block, opts)
    names.each do |n|
      raise ArgumentError, "task #{n.inspect} is already registered" if CelerityPlugin.registry.key?(n)

      CelerityPlugin.registry[n] = entry
    end
    CelerityPlugin.entries << entry
    block
  end

  # The request being handled by the calling thread (a Hash), or nil.
  def current_request
    call = Thread.current[:celerity_call]
    call&.request
  end

  # True once the worker has cancelled the calling thread's call (persistent mode).
  def cancelled?
    call = Thread.current[:celerity_call]
    !call.nil? && !call.cancel_reason.nil?
  end

  # The plugin's description (the answer to `describe`), as a Hash.
  def describe(name = nil)
    tasks = {}
    CelerityPlugin.registry.each { |n, entry| tasks[n] = entry.description }
    { 'protocol' => PROTOCOL, 'name' => name || CelerityPlugin.plugin_name, 'tasks' => tasks }
  end

  # Serve the registered tasks in the mode CELERITY_MODE names, then exit the process.
  # name: what initialize and describe call this plugin (default: the script's file name).
  # max_inflight: persistent mode only; calls run at once, each in a thread (default 1).
  def run(name: nil, max_inflight: 1)
    if CelerityPlugin.entries.empty?
      CelerityPlugin.log('no task registered; register a block with task("name") { ... }')
      exit(EX_USAGE)
    end
    mode = ENV['CELERITY_MODE'].to_s.empty? ? 'oneshot' : ENV['CELERITY_MODE']
    unless %w[oneshot persistent describe].include?(mode)
      CelerityPlugin.log("unknown CELERITY_MODE #{mode.inspect} (expected oneshot, persistent or describe)")
      exit(EX_USAGE)
    end
    proto_in, out = CelerityPlugin.claim_stdio
    code = case mode
           when 'describe'
             proto_in.read # {"method": "describe", "protocol": 1}: nothing in it to act on
             out.write(CelerityPlugin.dumps(describe(name)), "\n")
             out.flush
             0
           when 'oneshot' then CelerityPlugin.oneshot(proto_in, out)
           else Server.new(proto_in, out, name || CelerityPlugin.plugin_name, [1, Integer(max_inflight)].max).serve
           end
    $stderr.flush
    exit!(code) # the reader thread may sit in a read: do not wait for it
  end

  # ------------------------------------------------------------------ helpers

  def self.normalize_options(options)
    opts = {}
    options.each { |k, v| opts[k.to_s] = v }
    unknown = opts.keys - POLICY_KEYS - SCHEMA_KEYS
    unless unknown.empty?
      raise ArgumentError, "task: unknown option#{unknown.size > 1 ? 's' : ''} #{unknown.join(', ')} " \
                           "(known: #{(POLICY_KEYS + SCHEMA_KEYS).sort.join(', ')})"
    end
    raise TypeError, 'task: doc: must be a string' if opts.key?('doc') && !opts['doc'].nil? && !opts['doc'].is_a?(String)

    if opts.key?('params') && !opts['params'].nil?
      params = opts['params']
      opts['params'] =
        case params
        when Array
          unless params.all? { |p| (p.is_a?(String) || p.is_a?(Symbol)) && !p.to_s.empty? }
            raise TypeError, 'task: params: an array must hold parameter names'
          end

          params.to_h { |p| [p.to_s, {}] }
        when Hash then params.to_h { |k, v| [k.to_s, schema_of(v, "params.#{k}")] }
        else raise TypeError, 'task: params: must be an array of names or a hash (name => type name or schema)'
        end
    end
    %w[varargs varkwargs returns].each { |k| schema_of(opts[k], k) if opts[k] && opts[k] != true }
    begin
      JSON.generate(opts)
    rescue StandardError => e
      raise TypeError, "task: the options must be JSON values: #{e.message}"
    end
    opts
  end

  def self.schema_of(value, where)
    return {} if value == true

    if value.is_a?(String) || value.is_a?(Symbol)
      unless TYPE_NAMES.include?(value.to_s)
        raise TypeError, "task: #{where}: unknown type name #{value.to_s.inspect} (one of #{TYPE_NAMES.join(', ')}, or a schema hash)"
      end

      return { 'type' => value.to_s }
    end
    raise TypeError, "task: #{where}: expected a type name or a schema hash, got #{value.inspect}" unless value.is_a?(Hash)

    JSON.parse(JSON.generate(value)) # string keys all the way down
  end

  def self.plugin_name
    base = File.basename($PROGRAM_NAME.to_s, '.*')
    base.empty? ? 'plugin' : base
  end

  def self.log(message)
    $stderr.write("celerity_plugin: #{message}\n")
    $stderr.flush
  rescue IOError, SystemCallError
    nil
  end

  # Keep stdin and stdout for the protocol, out of the tasks' reach: afterwards file
  # descriptor 1 leads to stderr and descriptor 0 reads /dev/null.
  def self.claim_stdio
    $stdout.flush
    out = $stdout.dup # Ruby's dup sets close-on-exec: child processes never see it
    input = $stdin.dup
    $stdout.reopen($stderr)
    $stdin.reopen(File::NULL)
    out.sync = false
    out.set_encoding('UTF-8')
    input.binmode
    [input, out]
  end

  def self.dumps(obj)
    JSON.generate(obj, allow_nan: true)
  end

  def self.error_info(exc, traceback: true)
    retryable = exc.respond_to?(:retryable) && exc.retryable == true
    type = (exc.class.name || 'Error').split('::').last # RetryableError, as Python and Node say
    {
      'type' => type,
      'message' => exc.message.to_s.empty? ? type : exc.message.to_s,
      'retryable' => retryable,
      'traceback' => traceback ? exc.full_message(highlight: false, order: :top) : nil
    }
  end

  def self.parse(bytes)
    text = bytes.dup.force_encoding('UTF-8')
    raise JSON::ParserError, 'not valid UTF-8' unless text.valid_encoding?

    JSON.parse(text)
  end

  # Check a request and find its entry: [entry, args, kwargs].
  def self.resolve(request)
    raise BadRequest.new(INVALID_PARAMS, 'InvalidRequest', 'the request must be a JSON object') unless request.is_a?(Hash)

    name = request['task']
    raise BadRequest.new(INVALID_PARAMS, 'InvalidRequest', 'the request has no "task" string') unless name.is_a?(String)

    args = request['args'].nil? ? [] : request['args']
    kwargs = request['kwargs'].nil? ? {} : request['kwargs']
    raise BadRequest.new(INVALID_PARAMS, 'InvalidRequest', '"args" must be an array') unless args.is_a?(Array)
    raise BadRequest.new(INVALID_PARAMS, 'InvalidRequest', '"kwargs" must be an object') unless kwargs.is_a?(Hash)

    entry = registry[name]
    entry = entries.first if entry.nil? && entries.size == 1
    if entry.nil?
      served = registry.keys.sort.join(', ')
      raise BadRequest.new(METHOD_NOT_FOUND, 'NotRegistered',
                           "task #{name.inspect} is not served by #{plugin_name} (serves: #{served.empty? ? 'nothing' : served})")
    end
    [entry, args, kwargs]
  end

  # One call: its request, and whether the worker gave up on it.
  class Call
    attr_reader :rpc_id, :request, :entry, :args, :kwargs
    attr_accessor :state, :cancel_reason, :thread

    def initialize(rpc_id, request, entry = nil, args = [], kwargs = {})
      @rpc_id = rpc_id
      @request = request
      @entry = entry
      @args = args
      @kwargs = kwargs
      @state = :queued # queued -> running -> done
      @cancel_reason = nil
      @thread = nil
    end
  end

  # ------------------------------------------------------------------ one-shot

  def self.oneshot(input, out)
    reply = lambda do |obj|
      out.write(dumps(obj), "\n")
      out.flush
    end
    begin
      request = parse(input.read)
    rescue JSON::ParserError, EncodingError => e
      reply.call({ 'error' => { 'type' => 'InvalidRequest', 'message' => "stdin is not a JSON document: #{e.message}",
                                'retryable' => false, 'traceback' => nil } })
      return 0
    end
    begin
      entry, args, kwargs = resolve(request)
    rescue BadRequest => e
      reply.call({ 'error' => { 'type' => e.type, 'message' => e.message, 'retryable' => false, 'traceback' => nil } })
      return 0
    end
    Thread.current[:celerity_call] = Call.new(request['id'], request)
    begin
      result = entry.call(args, kwargs)
    rescue StandardError, ScriptError => e
      info = error_info(e)
      reply.call({ 'error' => info })
      return 0 unless info['retryable']

      # On exit 75 the worker reports the last lines of stderr, not stdout: say it there too.
      log("#{info['type']}: #{info['message']} (exit 75: asking for a retry)")
      return EX_TEMPFAIL
    ensure
      Thread.current[:celerity_call] = nil
    end
    begin
      text = dumps({ 'result' => result })
    rescue StandardError => e
      reply.call({ 'error' => { 'type' => e.class.name, 'message' => "the task's result is not JSON: #{e.message}",
                                'retryable' => false, 'traceback' => nil } })
      return 0
    end
    out.write(text, "\n")
    out.flush
    0
  end

  # ------------------------------------------------------------------ persistent

  # Newline-delimited JSON-RPC 2.0: a reader thread, max_inflight executor threads.
  class Server
    STOP = Object.new.freeze

    def initialize(input, out, name, max_inflight)
      @input = input
      @out = out
      @name = name
      @max_inflight = max_inflight
      @write_lock = Mutex.new
      @lock = Mutex.new
      @idle = ConditionVariable.new
      @calls = {} # JSON text of the id -> Call
      @pending = Queue.new
      @accepting = true
      @shutdown_threads = []
      # Answers decided (their calls out of @calls) but not written yet: a shutdown is
      # answered after them, or the worker could see it before a call's answer.
      @answering = 0
    end

    def send(obj)
      line = "#{CelerityPlugin.dumps(obj)}\n"
      @write_lock.synchronize do
        @out.write(line)
        @out.flush
      end
    rescue Errno::EPIPE, IOError
      exit!(0) # the worker is gone; nobody is left to answer
    end

    def send_error(rpc_id, code, message, data = nil)
      error = { 'code' => code, 'message' => message }
      error['data'] = data unless data.nil?
      send({ 'jsonrpc' => '2.0', 'id' => rpc_id, 'error' => error })
    end

    def serve
      reader = Thread.new { read_loop }
      reader.report_on_exception = false
      executors = Array.new(@max_inflight) { Thread.new { executor_loop } }
      executors.each(&:join)
      @shutdown_threads.each(&:join)
      0
    end

    def read_loop
      while (line = @input.gets)
        next if line.strip.empty?

        begin
          message = CelerityPlugin.parse(line)
        rescue JSON::ParserError, EncodingError => e
          send_error(nil, PARSE_ERROR, "parse error: #{e.message}")
          next
        end
        begin
          return if handle(message) == STOP
        rescue StandardError => e
          CelerityPlugin.log("internal error: #{e.full_message(highlight: false)}")
        end
      end
      @pending << STOP # EOF: answer what was received, then exit
    end

    def handle(message)
      unless message.is_a?(Hash) && message['method'].is_a?(String)
        send_error(message.is_a?(Hash) ? message['id'] : nil, INVALID_REQUEST, 'not a JSON-RPC 2.0 request')
        return nil
      end
      method = message['method']
      has_id = message.key?('id')
      rpc_id = message['id']
      params = message['params']
      if method == 'task/run' && has_id
        submit(rpc_id, params)
      elsif method == '$/cancel'
        cancel(params['id'], (params['reason'] || 'cancelled').to_s) if params.is_a?(Hash) && params.key?('id')
      elsif method == 'initialize' && has_id
        initialize_reply(rpc_id, params)
      elsif method == 'describe' && has_id
        send({ 'jsonrpc' => '2.0', 'id' => rpc_id, 'result' => CelerityPlugin.describe(@name) })
      elsif method == 'shutdown' && has_id
        @accepting = false
        @shutdown_threads << Thread.new { finish_shutdown(rpc_id) }
      elsif method == 'exit'
        # After a shutdown request the calls finish and get answered first; a bare exit
        # cancels whatever is in flight.
        @accepting = false
        cancel_all('shutdown') if @shutdown_threads.empty?
        @pending << STOP
        return STOP
      elsif has_id
        send_error(rpc_id, METHOD_NOT_FOUND, "unknown method #{method.inspect}")
      end
      nil
    end

    def initialize_reply(rpc_id, params)
      if params.is_a?(Hash)
        protocol = params.fetch('protocol', PROTOCOL)
        CelerityPlugin.log("worker speaks protocol #{protocol.inspect}, this helper speaks #{PROTOCOL}") if protocol != PROTOCOL
        wanted = params['tasks']
        if wanted.is_a?(Array) && CelerityPlugin.entries.size != 1
          missing = wanted.reject { |t| CelerityPlugin.registry.key?(t) }
          CelerityPlugin.log("asked for tasks this plugin does not serve: #{missing.join(', ')}") unless missing.empty?
        end
      end
      send({ 'jsonrpc' => '2.0', 'id' => rpc_id,
             'result' => { 'protocol' => PROTOCOL, 'name' => @name, 'max_inflight' => @max_inflight } })
    end

    def submit(rpc_id, params)
      unless @accepting
        send_error(rpc_id, TASK_FAILED, 'the plugin is shutting down',
                   { 'type' => 'ShuttingDown', 'retryable' => true, 'traceback' => nil })
        return
      end
      begin
        entry, args, kwargs = CelerityPlugin.resolve(params)
      rescue BadRequest => e
        send_error(rpc_id, e.code, e.message, { 'type' => e.type, 'retryable' => false, 'traceback' => nil })
        return
      end
      key = JSON.generate(rpc_id)
      call = Call.new(rpc_id, params, entry, args, kwargs)
      @lock.synchronize do
        if @calls.key?(key)
          CelerityPlugin.log("ignoring a second task/run with id #{key} while the first is in flight")
          return
        end
        @calls[key] = call
      end
      @pending << call
    end

    # Answers the call at once; a running block gets Cancelled raised in it.
    def cancel(rpc_id, reason)
      key = JSON.generate(rpc_id)
      call = @lock.synchronize do
        c = @calls[key]
        next nil if c.nil? || !c.cancel_reason.nil?

        c.cancel_reason = reason
        @calls.delete(key)
        @answering += 1
        c.thread.raise(Cancelled, reason) if c.state == :running && c.thread
        c.state = :done if c.state == :queued
        c
      end
      return if call.nil?

      begin
        send_error(rpc_id, CANCELLED, "cancelled (#{reason})",
                   { 'type' => 'Cancelled', 'reason' => reason, 'retryable' => false, 'traceback' => nil })
      ensure
        answer_written
      end
    end

    def answer_written
      @lock.synchronize do
        @answering -= 1
        @idle.broadcast
      end
    end

    def cancel_all(reason)
      ids = @lock.synchronize { @calls.values.map(&:rpc_id) }
      ids.each { |i| cancel(i, reason) }
    end

    def finish_shutdown(rpc_id)
      @lock.synchronize { @idle.wait(@lock) until @calls.empty? && @answering.zero? }
      send({ 'jsonrpc' => '2.0', 'id' => rpc_id, 'result' => {} })
    end

    def executor_loop
      # Cancelled is delivered only while the task's own code runs (see execute).
      Thread.handle_interrupt(Cancelled => :never) do
        loop do
          call = @pending.pop
          if call.equal?(STOP)
            @pending << STOP # let the other executors see it too
            break
          end
          run_call(call)
        end
      end
    end

    def run_call(call)
      started = @lock.synchronize do
        next false unless call.state == :queued

        call.state = :running
        call.thread = Thread.current
        true
      end
      return unless started

      outcome = execute(call)
      answer = @lock.synchronize do
        call.state = :done
        call.thread = nil
        key = JSON.generate(call.rpc_id)
        mine = @calls[key].equal?(call)
        if mine
          @calls.delete(key)
          @answering += 1
        end
        mine
      end
      begin
        discard_stale_cancel
        return unless answer # already answered as cancelled

        if outcome[0] == :ok
          begin
            line = CelerityPlugin.dumps({ 'jsonrpc' => '2.0', 'id' => call.rpc_id, 'result' => outcome[1] })
          rescue StandardError => e
            send_error(call.rpc_id, TASK_FAILED, "the task's result is not JSON: #{e.message}",
                       { 'type' => e.class.name, 'retryable' => false, 'traceback' => nil })
            return
          end
          @write_lock.synchronize do
            @out.write(line, "\n")
            @out.flush
          end
        else
          info = outcome[1]
          send_error(call.rpc_id, TASK_FAILED, info['message'],
                     { 'type' => info['type'], 'retryable' => info['retryable'], 'traceback' => info['traceback'] })
        end
      ensure
        answer_written if answer
      end
    rescue Errno::EPIPE, IOError
      exit!(0)
    end

    def execute(call)
      Thread.current[:celerity_call] = call
      Thread.handle_interrupt(Cancelled => :immediate) do
        raise Cancelled, call.cancel_reason unless call.cancel_reason.nil?

        [:ok, call.entry.call(call.args, call.kwargs)]
      end
    rescue Cancelled
      [:cancelled, nil]
    rescue StandardError, ScriptError => e
      [:error, CelerityPlugin.error_info(e)]
    rescue SystemExit => e
      CelerityPlugin.log("task #{call.request['task']} ended the process (exit #{e.status})")
      exit!(e.status)
    ensure
      Thread.current[:celerity_call] = nil
    end

    # A Cancelled raised just as the block returned is still pending: drop it here, so it
    # cannot hit the next call.
    def discard_stale_cancel
      while Thread.pending_interrupt?(Cancelled)
        begin
          Thread.handle_interrupt(Cancelled => :immediate) { Thread.pass }
        rescue Cancelled
          nil
        end
      end
    end
  end
end
