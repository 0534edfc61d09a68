// SPDX-License-Identifier: MIT
pragma solidity ^0.8.27;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title The Anti-Delos charter in force: its version, the SHA-256 of the charter file, each metric's retention
///        and consent flag, and the audit log's checkpoints. Owned by the Governor's timelock: every change is a
///        DAO vote. A worker refuses a charter file whose hash is not `policyHash`.
contract Charter is Ownable {
    struct MetricRule {
        bool allowed;
        bool consentRequired;
        uint32 retentionDays;
    }

    struct Checkpoint {
        uint64 size;
        bytes32 root;
        uint64 anchoredAt;
    }

    uint64 public version;
    bytes32 public policyHash;
    mapping(bytes32 => MetricRule) public metrics; // keccak256(bytes(name)) => rule
    string[] private _metricNames;
    mapping(bytes32 => bool) private _known;
    Checkpoint[] private _checkpoints;
    /// @notice Who may append audit checkpoints besides the owner (the worker's relayer: the hourly anchor
    ///         cannot wait for a DAO vote). It can only append a log head that does not shrink; it changes no rule.
    address public anchorer;

    event CharterAmended(uint64 indexed version, bytes32 policyHash);
    event MetricSet(string name, bool allowed, bool consentRequired, uint32 retentionDays);
    event CheckpointAnchored(uint256 indexed index, uint64 size, bytes32 root);
    event AnchorerSet(address anchorer);

    error VersionNotIncreasing(uint64 current, uint64 proposed);
    error CheckpointShrinks(uint64 previousSize, uint64 size);
    error RetentionOutOfRange(uint32 retentionDays);
    error NotAnchorer(address caller);

    constructor(address timelock, uint64 initialVersion, bytes32 initialHash) Ownable(timelock) {
        version = initialVersion;
        policyHash = initialHash;
        emit CharterAmended(initialVersion, initialHash);
    }

    /// @notice A new charter version: the version must grow, so an old charter cannot be put back in force.
    function amend(uint64 newVersion, bytes32 newHash) external onlyOwner {
        if (newVersion <= version) revert VersionNotIncreasing(version, newVersion);
        version = newVersion;
        policyHash = newHash;
        emit CharterAmended(newVersion, newHash);
    }

    function setMetric(string calldata name, bool allowed, bool consentRequired, uint32 retentionDays)
        external
        onlyOwner
    {
        if (allowed && (retentionDays == 0 || retentionDays > 3650)) revert RetentionOutOfRange(retentionDays);
        bytes32 key = keccak256(bytes(name));
        if (!_known[key]) {
            _known[key] = true;
            _metricNames.push(name);
        }
        metrics[key] = MetricRule(allowed, consentRequired, allowed ? retentionDays : 0);
        emit MetricSet(name, allowed, consentRequired, allowed ? retentionDays : 0);
    }

    function metricRule(string calldata name) external view returns (MetricRule memory) {
        return metrics[keccak256(bytes(name))];
    }

    function metricNames() external view returns (string[] memory) {
        return _metricNames;
    }

    function setAnchorer(address newAnchorer) external onlyOwner {
        anchorer = newAnchorer;
        emit AnchorerSet(newAnchorer);
    }

    /// @notice The audit log's head (RFC 6962 tree size and root); a log only grows.
    function anchorCheckpoint(uint64 size, bytes32 root) external {
        if (msg.sender != owner() && msg.sender != anchorer) revert NotAnchorer(msg.sender);
        uint256 n = _checkpoints.length;
        if (n > 0 && size < _checkpoints[n - 1].size) revert CheckpointShrinks(_checkpoints[n - 1].size, size);
        _checkpoints.push(Checkpoint(size, root, uint64(block.timestamp)));
        emit CheckpointAnchored(n, size, root);
    }

    function checkpointCount() external view returns (uint256) {
        return _checkpoints.length;
    }

    function checkpoint(uint256 index) external view returns (Checkpoint memory) {
        return _checkpoints[index];
    }

    function latestCheckpoint() external view returns (Checkpoint memory) {
        return _checkpoints[_checkpoints.length - 1];
    }
}
