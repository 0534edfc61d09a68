// SPDX-License-Identifier: MIT
pragma solidity ^0.8.27;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IVotes} from "@openzeppelin/contracts/governance/utils/IVotes.sol";

/// @title Gives many holders voting power in one transaction: a transfer, then each holder's own signed
/// self-delegation (delegateBySig). Used to set up many local voters quickly (tests, benchmarks, demos).
contract VotingPowerAirdrop {
    struct Grant {
        address holder;
        uint256 amount;
        uint256 nonce;
        uint256 expiry;
        uint8 v;
        bytes32 r;
        bytes32 s;
    }

    function airdrop(address token, Grant[] calldata grants) external {
        for (uint256 i = 0; i < grants.length; i++) {
            Grant calldata g = grants[i];
            if (g.amount > 0) {
                require(IERC20(token).transferFrom(msg.sender, g.holder, g.amount), "transfer failed");
            }
            if (IVotes(token).delegates(g.holder) != g.holder) {
                IVotes(token).delegateBySig(g.holder, g.nonce, g.expiry, g.v, g.r, g.s);
            }
        }
    }
}
